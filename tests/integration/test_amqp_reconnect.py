"""RabbitMQ going away under a connected broker, seen through a TCP proxy that this test cuts
and restores (the shared server itself is never touched)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator, Callable

import pytest
from tcp_proxy import Proxy
from tideflow.broker import Delivery, Message, create_broker, topology
from tideflow.broker import _reconnection as reconnection

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

DEADLINE_S = 30.0


@pytest.fixture
async def proxied(rabbitmq_url: str) -> AsyncIterator[tuple[Proxy, str]]:
    url = urllib.parse.urlsplit(rabbitmq_url)
    proxy = Proxy((url.hostname or "127.0.0.1", url.port or 5672))
    await proxy.restore()
    yield proxy, url._replace(netloc=f"guest:guest@127.0.0.1:{proxy.port}").geturl()
    with contextlib.suppress(AssertionError):
        await proxy.cut()


async def until(check: Callable[[], bool], what: str) -> None:
    for _ in range(int(DEADLINE_S / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_lost_connection_comes_back_with_backoff_and_throttled_warnings(
    proxied: tuple[Proxy, str], caplog: pytest.LogCaptureFixture
) -> None:
    proxy, url = proxied
    caplog.set_level(logging.DEBUG, logger="tideflow.broker")
    broker = create_broker(url)
    await broker.connect()
    received: asyncio.Queue[Delivery] = asyncio.Queue()

    async def consume() -> None:
        async for delivery in broker.consume("test.reconnect", prefetch=10):
            await received.put(delivery)

    await broker.declare_queue(
        "test.reconnect", exchange=topology.INTERNAL_EXCHANGE, routing_keys=["reconnect"]
    )
    consumer = asyncio.create_task(consume())
    try:
        # Given a consumer at work (its connection opens with the first consume)
        await broker.publish([Message(topology.INTERNAL_EXCHANGE, "reconnect", b"before")])
        async with asyncio.timeout(DEADLINE_S):
            await (await received.get()).ack()
        # And RabbitMQ gone for long enough that each connection fails 5 times
        await proxy.cut()

        def attempts() -> list[tuple[str, int, float]]:
            found = []
            for record in caplog.records:
                match = re.search(r"unreachable \(attempt (\d+):.*within ([\d.]+)s", record.message)
                if match and record.name == "tideflow.broker._reconnection":
                    found.append((record.levelname, int(match[1]), float(match[2])))
            return found

        await until(
            lambda: sum(n == 5 for _, n, _ in attempts()) == 2, "five failed attempts of each"
        )

        # When it is back
        await proxy.restore()
        await until(
            lambda: sum("reachable again" in r.message for r in caplog.records) == 2,
            "both connections to come back",
        )
        await broker.publish([Message(topology.INTERNAL_EXCHANGE, "reconnect", b"after")])
        async with asyncio.timeout(DEADLINE_S):
            delivery = await received.get()
            # An ack in flight when the link was cut is lost: "before" may come again first.
            while delivery.body == b"before":
                await delivery.ack()
                delivery = await received.get()
        await delivery.ack()
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        await broker.close()

    # Then work resumed, and each connection's pauses grew from the first towards the cap
    assert delivery.body == b"after"
    seen = attempts()
    for number in (1, 2, 3, 4, 5):
        delays = [delay for _, n, delay in seen if n == number]
        assert len(delays) == 2, seen  # the publisher's and the consumer's connection
        ceiling = min(reconnection.MAX_S, reconnection.FIRST_S * 2 ** (number - 1))
        # Equal jitter, and the log rounds to 0.1 s.
        assert all(ceiling / 2 - 0.05 <= d <= ceiling + 0.05 for d in delays), seen
    # And only the 1st, 2nd, 4th, 8th, ... failure was a warning, each with the masked URL
    assert {(level, n) for level, n, _ in seen if n <= 5} == {
        ("WARNING", 1),
        ("WARNING", 2),
        ("DEBUG", 3),
        ("WARNING", 4),
        ("DEBUG", 5),
    }
    text = caplog.text
    assert "guest:***@127.0.0.1" in text
    assert "guest:guest" not in text
    # And the drivers' own line for every attempt was dropped, in favour of ours
    assert "error when creating transport" not in text
    assert "Connection attempt to" not in text
