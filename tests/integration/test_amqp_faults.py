"""The RabbitMQ broker under faults: a server restart, an outage, no server at all.

The restarts stop the RabbitMQ application for every test running against it at the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator

import pytest
from tideflow import errors
from tideflow.broker import Broker, Delivery, Message, create_broker, topology
from tideflow.broker import _amqp as amqp

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

DEADLINE_S = 30.0
QUEUE = "test.faults"
KEY = "faults"


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=50)
    assert process.returncode == 0, output.decode()


async def start_rabbitmq() -> None:
    await rabbitmqctl("start_app")
    await rabbitmqctl("await_startup")


@pytest.fixture
async def broker(rabbitmq_url: str) -> AsyncIterator[Broker]:
    broker = create_broker(rabbitmq_url)
    await broker.connect()
    await broker.declare_queue(QUEUE, exchange=topology.INTERNAL_EXCHANGE, routing_keys=[KEY])
    try:
        yield broker
    finally:
        # Whatever happened in the test, leave RabbitMQ running for the next one.
        await start_rabbitmq()
        await broker.close()


def message(body: bytes) -> Message:
    return Message(topology.INTERNAL_EXCHANGE, KEY, body, message_id=body.decode())


async def until_it_pings(broker: Broker) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not await broker.ping():
        assert time.monotonic() < deadline, "the broker did not reconnect"
        await asyncio.sleep(0.1)


async def test_a_consumer_keeps_consuming_across_a_restart_and_gets_unacked_messages_again(
    broker: Broker,
) -> None:
    received: asyncio.Queue[Delivery] = asyncio.Queue()

    async def consume() -> None:
        async for delivery in broker.consume(QUEUE, prefetch=10):
            await received.put(delivery)

    consumer = asyncio.create_task(consume())
    try:
        await broker.publish([message(b"acked"), message(b"in-hand")])
        async with asyncio.timeout(DEADLINE_S):
            acked, in_hand = await received.get(), await received.get()
        await acked.ack()

        await rabbitmqctl("stop_app")
        await start_rabbitmq()
        await broker.publish([message(b"after")])
        # The delivery in hand belonged to the lost channel: settling it must not raise.
        await in_hand.ack()

        async with asyncio.timeout(DEADLINE_S):
            again, after = await received.get(), await received.get()
        await again.ack()
        await after.ack()
        assert not consumer.done()
    finally:
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer

    assert [(d.body, d.redelivered) for d in (acked, in_hand, again, after)] == [
        (b"acked", False),
        (b"in-hand", False),
        (b"in-hand", True),
        (b"after", False),
    ]
    await until_it_pings(broker)


async def test_a_publish_during_an_outage_waits_for_the_server_then_gives_up(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    await rabbitmqctl("stop_app")
    assert not await broker.ping()

    waiting = asyncio.create_task(broker.publish([message(b"during")]))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await start_rabbitmq()
    async with asyncio.timeout(DEADLINE_S):
        await waiting

    await rabbitmqctl("stop_app")
    monkeypatch.setattr(amqp, "_PUBLISH_PATIENCE_S", 1.0)
    started = time.monotonic()
    with pytest.raises(errors.BrokerConnectionError, match="did not confirm"):
        await broker.publish([message(b"too late")])
    assert time.monotonic() - started < 5


async def test_an_unroutable_message_is_refused(broker: Broker) -> None:
    with pytest.raises(errors.UnroutableError, match="routing key 'nowhere'") as unroutable:
        await broker.publish([Message(topology.INTERNAL_EXCHANGE, "nowhere", b"lost")])
    assert (unroutable.value.exchange, unroutable.value.routing_key) == (
        topology.INTERNAL_EXCHANGE,
        "nowhere",
    )
    with pytest.raises(errors.BrokerError, match="NOT_FOUND") as caught:
        await broker.publish([Message("no.such.exchange", KEY, b"lost")])
    assert not isinstance(caught.value, errors.BrokerConnectionError)

    await broker.publish([message(b"still works")])
    deliveries = broker.consume(QUEUE, prefetch=1)
    async with asyncio.timeout(DEADLINE_S):
        delivery = await anext(deliveries)
    assert delivery.body == b"still works"
    await delivery.ack()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_connecting_to_a_closed_port_fails_quickly() -> None:
    broker = create_broker(f"amqp://guest:guest@127.0.0.1:{closed_port()}/")
    started = time.monotonic()

    with pytest.raises(errors.BrokerConnectionError, match="cannot connect to RabbitMQ") as caught:
        await broker.connect()

    assert time.monotonic() - started < 5
    assert caught.value.__cause__ is not None
    assert not await broker.ping()
    await broker.close()
