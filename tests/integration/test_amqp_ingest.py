"""Events published straight to the AMQP exchange, as any producer may (README: the AMQP contract)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aio_pika
import pytest
import tideflow
from tideflow.testing import Engine

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]


async def publish(
    url: str, body: bytes, *, routing_key: str, message_id: str | None = None
) -> None:
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("tideflow.events")
        message = aio_pika.Message(
            body,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=message_id,
        )
        await exchange.publish(message, routing_key=routing_key)


async def events_named(engine: Engine, name: str, count: int) -> list[dict[str, Any]]:
    for _ in range(250):
        data: list[dict[str, Any]] = (
            await engine.http.get("/v1/events", params={"name": name})
        ).json()["data"]
        if len(data) >= count:
            return data
        await asyncio.sleep(0.02)
    raise AssertionError(f"fewer than {count} events named {name}")


async def test_events_published_over_amqp_start_runs_and_bad_ones_are_dead_lettered(
    postgres_url: str, rabbitmq_url: str
) -> None:
    client = tideflow.Client(app_id="amqp")

    @client.create_function(fn_id="greet", trigger=tideflow.TriggerEvent(event="amqp/hello"))
    async def greet(ctx: tideflow.Context) -> str:
        return f"hello {ctx.event.data['who']}"

    environ = {"TIDEFLOW_DATABASE_URL": postgres_url, "TIDEFLOW_BROKER_URL": rabbitmq_url}
    async with Engine(client, environ=environ) as engine:
        await publish(rabbitmq_url, b"{not json", routing_key="amqp/hello")
        await publish(rabbitmq_url, json.dumps({"data": {}}).encode(), routing_key="amqp/hello")
        event = {"name": "amqp/hello", "data": {"who": "ada"}}
        await publish(
            rabbitmq_url, json.dumps(event).encode(), routing_key="amqp/hello", message_id="m-1"
        )
        await publish(
            rabbitmq_url, json.dumps(event).encode(), routing_key="amqp/hello", message_id="m-1"
        )
        (stored,) = await events_named(engine, "amqp/hello", 1)
        (run,) = await engine.wait_for_runs(stored["internal_id"])
        run = await engine.wait_for_run(run["run_id"])
        await asyncio.sleep(0.3)
        after = (await engine.http.get("/v1/events", params={"name": "amqp/hello"})).json()["data"]

        connection = await aio_pika.connect_robust(rabbitmq_url)
        async with connection:
            channel = await connection.channel()
            dead_queue = await channel.get_queue("tideflow.dead")
            reasons = []
            for _ in range(2):
                message = await dead_queue.get(timeout=5)
                assert message is not None
                reasons.append(str(message.headers["x-tideflow-reason"]))
                await message.ack()

    assert run["output"] == "hello ada"
    assert stored["id"] == "m-1"
    assert len(after) == 1
    assert any("body is not JSON" in reason for reason in reasons)
    assert any("name is required" in reason for reason in reasons)
