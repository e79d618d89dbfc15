"""Hostile input published to a live RabbitMQ with a running engine (signing internal traffic):
each body goes to `tideflow.dead` with its reason, and a good event sent after them all still
starts its run. The bodies come from the generators of test_hostile_input.py."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any

import aio_pika
import pytest
import tideflow
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hostile_input import KEY, hostile_events, hostile_internal
from tideflow import errors
from tideflow.broker import JobMessage, OutcomeMessage, Seal, topology
from tideflow.testing import Engine

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.timeout(180)]

EVENT_EXAMPLES = 25  # of 10 bodies each
INTERNAL_EXAMPLES = 10  # of 10 bodies each, sent to the outcomes and to the jobs queue
APP = "hostile"


def generated_bodies() -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    events: list[tuple[str, bytes]] = []
    internal: list[tuple[str, bytes]] = []

    @settings(max_examples=EVENT_EXAMPLES, deadline=None, database=None)
    @given(cases=hostile_events())
    def make_events(cases: list[tuple[str, bytes]]) -> None:
        # Oversized bodies cost the most to carry and are all refused unread alike: a few.
        events.extend(case for case in cases if case[0] != "oversized" or len(events) % 10 == 0)

    @settings(
        max_examples=INTERNAL_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(cases=st.lists(hostile_internal(), min_size=10, max_size=10))
    def make_internal(cases: list[tuple[str, bool, bytes]]) -> None:
        internal.extend((kind, body) for kind, _signed, body in cases)

    make_events()
    make_internal()
    return events, internal


def refused(decode: Any, body: bytes) -> bool:
    try:
        decode(body, Seal(KEY))
    except (ValueError, errors.SignatureError):
        return True
    return False


async def publish(url: str, messages: list[tuple[str, str, bytes]]) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        for exchange_name, key, body in messages:
            exchange = await channel.get_exchange(exchange_name)
            await exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), key
            )


async def dead_letters(url: str, expected: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.DEAD_LETTER_QUEUE)
        async with asyncio.timeout(90):
            while len(found) < expected:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.1)
                    continue
                found.append(dict(message.headers) | {"body": message.body})
                await message.ack()
        await asyncio.sleep(0.5)  # and nothing more
        while (message := await queue.get(fail=False)) is not None:
            found.append(dict(message.headers) | {"body": message.body})
            await message.ack()
    return found


async def test_hostile_messages_are_dead_lettered_with_their_reason_and_block_nothing(
    postgres_url: str, rabbitmq_url: str, figures: list[str]
) -> None:
    client = tideflow.Client(app_id=APP)

    @client.create_function(fn_id="ok", trigger=tideflow.TriggerEvent(event="hostile/ok"))
    async def ok(ctx: tideflow.Context) -> int:
        return int(ctx.event.data["n"])

    events, internal = generated_bodies()
    outcomes_refused = sum(refused(OutcomeMessage.decode, body) for _, body in internal)
    jobs_refused = sum(refused(JobMessage.decode, body) for _, body in internal)
    # Replayed and forged-but-well-signed outcomes, for jobs that are done or never were: no
    # dead letter (nothing tells them from a replay), and no effect.
    replays = [
        OutcomeMessage((f"01JREPLAYED{n:015d}",)).to_message(Seal(KEY)).body for n in range(20)
    ]

    environ = {
        "TIDEFLOW_DATABASE_URL": postgres_url,
        "TIDEFLOW_BROKER_URL": rabbitmq_url,
        "TIDEFLOW_SIGNING_KEY": KEY,
    }
    async with Engine(client, environ=environ) as engine:
        messages = [(topology.EVENTS_EXCHANGE, "hostile.input", body) for _, body in events]
        for _, body in internal:
            messages.append((topology.INTERNAL_EXCHANGE, topology.OUTCOMES_KEY, body))
            messages.append((topology.INTERNAL_EXCHANGE, topology.jobs_key(APP), body))
        messages += [(topology.INTERNAL_EXCHANGE, topology.OUTCOMES_KEY, b) for b in replays]
        good = {"name": "hostile/ok", "data": {"n": 7}}
        messages.append((topology.EVENTS_EXCHANGE, "hostile/ok", json.dumps(good).encode()))
        await publish(rabbitmq_url, messages)

        expected = len(events) + outcomes_refused + jobs_refused
        found = await dead_letters(rabbitmq_url, expected)
        data = (await engine.http.get("/v1/events", params={"name": "hostile/ok"})).json()["data"]
        (stored,) = data
        (run,) = await engine.wait_for_runs(stored["internal_id"])
        run = await engine.wait_for_run(run["run_id"])

    by_queue = collections.Counter(str(letter["x-tideflow-queue"]) for letter in found)
    kinds = collections.Counter(kind for kind, _ in events)
    figures.append(
        f"hostile input, live RabbitMQ: {len(events)} event bodies "
        f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}), "
        f"{len(internal)} bodies each to the outcomes and jobs queues, {len(replays)} replayed "
        f"outcomes; {len(found)} dead letters {dict(by_queue)}; the good event after them: "
        f"{run['status']}"
    )
    assert all(str(letter["x-tideflow-reason"]).strip() for letter in found)
    assert by_queue == collections.Counter(
        {
            topology.SCHEDULER_EVENTS_QUEUE: len(events),
            topology.SCHEDULER_OUTCOMES_QUEUE: outcomes_refused,
            topology.jobs_queue(APP): jobs_refused,
        }
    )
    assert run["status"] == "Completed"
    assert run["output"] == 7
