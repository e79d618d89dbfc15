"""`Client.send` over AMQP keeps one broker connection per client, until the client is closed."""

from __future__ import annotations

import asyncio
import subprocess
import time
import urllib.parse

import aio_pika
import pytest
import tideflow

pytestmark = pytest.mark.rabbitmq

CLIENT_NAME = "tideflow-client-under-test"
OBSERVER_QUEUE = "test.observed-events"
SENDS = 20
DEADLINE_S = 15.0


def named(url: str) -> str:
    """The URL with a connection name, so the client's connections can be told apart."""
    return f"{url}?name={CLIENT_NAME}"


def vhost_of(url: str) -> str:
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path[1:])


def client_connections(url: str) -> set[str]:
    """The client's open connections in the vhost, by peer address (one per socket)."""
    listed = subprocess.run(
        [
            "rabbitmqctl",
            "list_connections",
            "-p",
            vhost_of(url),
            "--no-table-headers",
            "--quiet",
            "name",
            "client_properties",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return {line.split("\t")[0] for line in listed.splitlines() if CLIENT_NAME in line}


def until_no_client_connections(url: str) -> set[str]:
    deadline = time.monotonic() + DEADLINE_S
    while (left := client_connections(url)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def event(n: int) -> dict[str, object]:
    return {"name": "conn/ping", "data": {"n": n}}


async def observe_events(url: str) -> None:
    """A queue bound to the events exchange, to see what the client sent."""
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            "tideflow.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(OBSERVER_QUEUE, durable=True)
        await queue.bind(exchange, "#")


async def observed_ids(url: str, count: int) -> list[str]:
    ids: list[str] = []
    async with await aio_pika.connect(url) as connection:
        queue = await (await connection.channel()).get_queue(OBSERVER_QUEUE)
        async with asyncio.timeout(DEADLINE_S):
            while len(ids) < count:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                ids.append(str(message.message_id))
                await message.ack()
    return ids


async def test_send_keeps_one_connection_until_aclose(rabbitmq_url: str) -> None:
    await observe_events(rabbitmq_url)
    await asyncio.to_thread(until_no_client_connections, rabbitmq_url)
    client = tideflow.Client(app_id="sender", broker_url=named(rabbitmq_url))

    async with client:
        # Concurrent first sends share the connection the first of them opens.
        firsts = await asyncio.gather(*(client.send(event(n)) for n in range(5)))
        ids = [event_id for sent in firsts for event_id in sent]
        opened = await asyncio.to_thread(client_connections, rabbitmq_url)
        for n in range(5, SENDS):
            ids += await client.send(event(n))
        kept = await asyncio.to_thread(client_connections, rabbitmq_url)

    assert len(opened) == 1  # publishing needs no consuming connection
    assert kept == opened
    assert await asyncio.to_thread(until_no_client_connections, rabbitmq_url) == set()
    assert sorted(await observed_ids(rabbitmq_url, SENDS)) == sorted(ids)
    # Closed is not final: the next send opens a connection again.
    more = await client.send(event(SENDS))
    assert await asyncio.to_thread(client_connections, rabbitmq_url)
    await client.aclose()
    assert await observed_ids(rabbitmq_url, 1) == more
    assert await asyncio.to_thread(until_no_client_connections, rabbitmq_url) == set()


def test_send_sync_keeps_one_connection_until_close(rabbitmq_url: str) -> None:
    asyncio.run(observe_events(rabbitmq_url))

    with tideflow.Client(app_id="sender", broker_url=named(rabbitmq_url)) as client:
        ids = client.send_sync(event(0))
        opened = client_connections(rabbitmq_url)
        for n in range(1, SENDS):
            ids += client.send_sync(event(n))
        kept = client_connections(rabbitmq_url)

    assert opened
    assert kept == opened
    assert until_no_client_connections(rabbitmq_url) == set()
    assert asyncio.run(observed_ids(rabbitmq_url, SENDS)) == ids


def test_a_client_sends_from_one_event_loop_after_another(rabbitmq_url: str) -> None:
    asyncio.run(observe_events(rabbitmq_url))
    client = tideflow.Client(app_id="sender", broker_url=named(rabbitmq_url))

    async def send_twice(n: int) -> tuple[list[str], set[str]]:
        ids = await client.send(event(n)) + await client.send(event(n + 1))
        return ids, await asyncio.to_thread(client_connections, rabbitmq_url)

    # Each loop ends without closing the client, as a pytest test's loop does.
    first_ids, first = asyncio.run(send_twice(0))
    between = until_no_client_connections(rabbitmq_url)
    second_ids, second = asyncio.run(send_twice(2))
    client.close()

    assert first
    assert between == set()  # an event loop that ends takes its connection with it
    assert second
    assert first.isdisjoint(second)
    assert until_no_client_connections(rabbitmq_url) == set()
    assert asyncio.run(observed_ids(rabbitmq_url, 4)) == first_ids + second_ids
