"""Timeouts: a run not started within `start` of its event, or not finished within `finish` of
its first step's start, is cancelled, with the cause in its error and one cancelled event."""

from __future__ import annotations

import asyncio
from typing import Any

import tideflow
from tideflow.testing import Engine, EngineFactory


async def cancelled_events(engine: Engine, run_id: str) -> list[dict[str, Any]]:
    answer = await engine.http.get(
        "/v1/events", params={"name": "tideflow/function.cancelled", "limit": 100}
    )
    return [e for e in answer.json()["data"] if e["data"]["run_id"] == run_id]


async def test_a_run_held_past_its_start_timeout_is_cancelled(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    release = asyncio.Event()
    bodies: list[int] = []

    @client.create_function(
        fn_id="one-at-a-time",
        trigger=tideflow.TriggerEvent(event="t/job"),
        concurrency=1,
        timeouts=tideflow.Timeouts(start="1s"),
    )
    async def one_at_a_time(ctx: tideflow.Context) -> Any:
        n = ctx.event.data["n"]
        if n == 0:
            await ctx.step.run("work", release.wait)
        bodies.append(n)
        return n

    async with engine_for(client) as engine:
        (first,) = await engine.send({"name": "t/job", "data": {"n": 0}})
        (first_run,) = await engine.wait_for_runs(first)
        await engine.wait_for_run(first_run["run_id"], status=["Running"])
        # Held behind the first run's slot for longer than its start timeout.
        (second,) = await engine.send({"name": "t/job", "data": {"n": 1}})
        (second_run,) = await engine.wait_for_runs(second)
        timed_out = await engine.wait_for_run(second_run["run_id"], timeout_s=15)
        release.set()
        finished = await engine.wait_for_run(first_run["run_id"])
        events = await cancelled_events(engine, second_run["run_id"])

    assert timed_out["status"] == "Cancelled"
    assert timed_out["error"]["name"] == "Cancelled"
    assert timed_out["error"]["message"].endswith("(timeout)")
    assert timed_out["run_started_at"] is None
    assert len(events) == 1
    assert finished["status"] == "Completed"  # its own start was in time
    assert 1 not in bodies  # the timed-out run never ran its handler


async def test_a_run_not_finished_in_time_is_cancelled_and_runs_no_further_step(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    after: list[str] = []

    @client.create_function(
        fn_id="slow",
        trigger=tideflow.TriggerEvent(event="t/slow"),
        timeouts=tideflow.Timeouts(finish="1s"),
    )
    async def slow(ctx: tideflow.Context) -> Any:
        await ctx.step.run("first", lambda: "ok")
        await ctx.step.sleep("long-nap", "5s")
        await ctx.step.run("after", lambda: after.append("ran"))

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/slow", "data": {}}, timeout_s=15)
        steps = await engine.steps(result.run["run_id"])
        events = await cancelled_events(engine, result.run["run_id"])

    assert result.status == "Cancelled"
    assert "finish timeout" in result.run["error"]["message"]
    assert result.run["error"]["message"].endswith("(timeout)")
    assert [s["name"] for s in steps] == ["first", "long-nap"]
    assert after == []
    assert len(events) == 1


async def test_runs_within_their_timeouts_are_left_alone(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="quick",
        trigger=tideflow.TriggerEvent(event="t/quick"),
        timeouts=tideflow.Timeouts(start="1s", finish="2s"),
    )
    async def quick(ctx: tideflow.Context) -> Any:
        await ctx.step.sleep("short-nap", "1500ms")  # past `start`, within `finish`
        return "done"

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/quick", "data": {}})
        await asyncio.sleep(1.0)  # past both deadlines: their timers find the run ended
        again = await engine.run(result.run["run_id"])

    assert result.status == again["status"] == "Completed"
    assert again["output"] == "done"
