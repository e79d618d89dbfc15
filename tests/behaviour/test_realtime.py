from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import httpx
import pydantic
import pytest
import tideflow
import uvicorn
import websockets
from tideflow.api import create_app
from tideflow.realtime import channel, topic
from tideflow.testing import Engine, EngineFactory, TestEngine


class Progress(pydantic.BaseModel):
    percent: int


orders = channel("order:{order_id}").add_topic(topic("progress", Progress)).add_topic(topic("done"))


def make_client() -> tideflow.Client:
    client = tideflow.Client(app_id="test")

    @client.create_function(fn_id="work", trigger=tideflow.TriggerEvent(event="t/work"))
    async def work(ctx: tideflow.Context) -> str:
        order = orders(order_id=ctx.event.data["order"])
        # Outside any step: runs again on every replay, published once.
        await ctx.publish(order, "progress", {"percent": 0})
        await ctx.step.run("half", lambda: 50)

        async def announce() -> int:
            await ctx.publish(order, "progress", Progress(percent=50))
            return 1

        await ctx.step.run("announce", announce)
        await ctx.step.sleep("nap", 10)
        await ctx.publish(order, "done", "ok")
        return "ok"

    return client


async def collect(subscription: tideflow.realtime.Subscription, count: int) -> list[Any]:
    received = []
    async for message in subscription:
        received.append(message)
        if len(received) == count:
            break
    return received


async def test_a_subscriber_gets_what_runs_publish_after_it_subscribed(
    engine_for: EngineFactory,
) -> None:
    client = make_client()
    async with engine_for(client) as engine:
        token = client.realtime_token(orders(order_id="7"), ["progress", "done"])
        await client.publish(orders(order_id="7"), "done", "before subscribing")
        async with client.subscribe(token) as subscription:
            await subscription.ready()
            (event_id,) = await engine.send({"name": "t/work", "data": {"order": "7"}})
            await engine.send({"name": "t/work", "data": {"order": "8"}})  # another channel
            received = await asyncio.wait_for(collect(subscription, 3), 15)
        (run,) = await engine.runs(event_id)

    assert [(m["channel"], m["topic"], m["data"]) for m in received] == [
        ("order:7", "progress", {"percent": 0}),
        ("order:7", "progress", {"percent": 50}),
        ("order:7", "done", "ok"),
    ]
    assert {m["run_id"] for m in received} == {run["run_id"]}
    assert all(isinstance(m["created_at"], int) for m in received)


async def test_a_topic_schema_is_enforced_on_publish() -> None:
    client = tideflow.Client(app_id="test")

    @client.create_function(fn_id="bad", trigger=tideflow.TriggerEvent(event="t/bad"))
    async def bad(ctx: tideflow.Context) -> None:
        await ctx.publish(orders(order_id="1"), "progress", {"percent": "lots"})

    outcome = await TestEngine(bad).execute()

    assert isinstance(outcome.error, tideflow.errors.RealtimeError)
    assert "does not match its schema" in str(outcome.error)
    assert outcome.published == []
    with pytest.raises(tideflow.errors.RealtimeError, match="no topic 'other'"):
        client.realtime_token(orders(order_id="1"), ["other"])
    with pytest.raises(tideflow.errors.RealtimeError, match="is a template"):
        client.realtime_token(orders, ["done"])


def test_the_test_engine_records_publishes_once_per_real_execution() -> None:
    client = make_client()
    (work,) = client.functions

    outcome = TestEngine(work).execute_sync(events=[{"name": "t/work", "data": {"order": "3"}}])

    assert [(m["topic"], m["data"]) for m in outcome.published] == [
        ("progress", {"percent": 0}),
        ("progress", {"percent": 50}),
        ("done", "ok"),
    ]


@contextlib.asynccontextmanager
async def serving(engine: Engine) -> AsyncIterator[str]:
    """The engine's API on a real HTTP server (SSE and WebSocket need one)."""
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(engine.api), host="127.0.0.1", port=0, lifespan="off", log_level="warning"
        )
    )
    task = asyncio.create_task(server.serve())
    for _ in range(1000):  # up to 10 s
        if server.started:
            break
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def sse_messages(url: str) -> AsyncGenerator[Any, None]:
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(10, read=None)) as http,
        http.stream("GET", url) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                yield json.loads(line[5:])


async def test_sse_and_websocket_routes_stream_messages_and_refuse_bad_tokens() -> None:
    client = make_client()
    async with Engine(client) as engine, serving(engine) as host:
        token = client.realtime_token(orders(order_id="9"), ["done"])
        expired = client.realtime_token(orders(order_id="9"), ["done"], ttl=0)
        refused_queries = [
            "token=nonsense",
            f"token={token[:-2]}xx",  # a wrong signature
            f"token={expired}",
            f"token={token}&topics=progress",  # a topic outside the token
            f"token={token}&channel=order:10",  # another channel
        ]
        for query in refused_queries:
            answer = await engine.http.get(f"/v1/realtime?{query}")
            assert answer.status_code == 401, query
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(f"ws://{host}/v1/realtime/ws?{query}"):
                    pass
            assert refused.value.response.status_code == 401, query

        outsider = tideflow.Client(
            app_id="test",
            settings=tideflow.Settings.from_env({"TIDEFLOW_API_URL": f"http://{host}"}),
        )
        with pytest.raises(tideflow.errors.RealtimeError, match="answered 401"):
            await outsider.subscribe(expired).ready()

        sse = sse_messages(f"http://{host}/v1/realtime?token={token}")
        assert await anext(sse) == {}  # ready
        async with websockets.connect(f"ws://{host}/v1/realtime/ws?token={token}") as ws:
            assert json.loads(await ws.recv()) == {"type": "ready"}
            await engine.send({"name": "t/work", "data": {"order": "9"}})
            by_ws = json.loads(await asyncio.wait_for(ws.recv(), 15))
            by_sse = await asyncio.wait_for(anext(sse), 15)
        await sse.aclose()

    assert (by_ws["type"], by_ws["channel"], by_ws["topic"], by_ws["data"]) == (
        "message",
        "order:9",
        "done",
        "ok",
    )
    assert {k: v for k, v in by_ws.items() if k != "type"} == by_sse
