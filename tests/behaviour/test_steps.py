from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import tideflow
from tideflow.testing import EngineFactory


async def test_each_step_body_runs_once_and_its_result_is_memoized(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    calls: list[str] = []

    def record(name: str, value: int) -> int:
        calls.append(name)
        return value

    @client.create_function(fn_id="three-steps", trigger=tideflow.TriggerEvent(event="t/go"))
    async def three_steps(ctx: tideflow.Context) -> dict[str, Any]:
        a = await ctx.step.run("a", record, "a", 1)
        b = await ctx.step.run("b", record, "b", a + 1)
        await ctx.step.sleep("pause", 10)
        c = await ctx.step.run("c", record, "c", b + 1)
        return {"sum": a + b + c}

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/go", "data": {}})

    assert result.status == "Completed"
    assert result.output == {"sum": 6}
    assert calls == ["a", "b", "c"]
    assert [(s["name"], s["op"], s["status"], s["output"]) for s in result.steps] == [
        ("a", "run", "Completed", 1),
        ("b", "run", "Completed", 2),
        ("pause", "sleep", "Completed", None),
        ("c", "run", "Completed", 3),
    ]
    assert result.run["function_id"] == "test-three-steps"
    assert result.run["run_started_at"] is not None
    assert result.run["ended_at"] is not None


async def test_a_step_id_reused_in_a_loop_counts_occurrences(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="loop", trigger=tideflow.TriggerEvent(event="t/loop"))
    async def loop(ctx: tideflow.Context) -> list[int]:
        return [await ctx.step.run("square", lambda n=n: n * n) for n in range(4)]

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/loop"})

    assert result.output == [0, 1, 4, 9]
    assert [s["name"] for s in result.steps] == ["square"] * 4
    assert len({s["id"] for s in result.steps}) == 4


async def test_sync_handlers_get_the_same_steps_synchronously(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    calls: list[int] = []

    def body(n: int) -> int:
        calls.append(n)
        return n * 10

    @client.create_function(fn_id="sync", trigger=tideflow.TriggerEvent(event="t/sync"))
    def sync_handler(ctx: tideflow.SyncContext) -> dict[str, Any]:
        first = ctx.step.run("first", body, 1)
        ctx.step.sleep("nap", "50ms")
        pair = ctx.group.parallel(
            (lambda: ctx.step.run("x", body, 2), lambda: ctx.step.run("y", body, 3))
        )
        return {"first": first, "pair": list(pair), "user": ctx.event.data["user"]}

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/sync", "data": {"user": "ada"}})

    assert result.status == "Completed", result.run["error"]
    assert result.output == {"first": 10, "pair": [20, 30], "user": "ada"}
    assert sorted(calls) == [1, 2, 3]


async def test_sleep_pauses_the_run_for_its_duration(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="sleeper", trigger=tideflow.TriggerEvent(event="t/sleep"))
    async def sleeper(ctx: tideflow.Context) -> float:
        before: float = await ctx.step.run("before", time.time)
        await ctx.step.sleep("nap", datetime.timedelta(milliseconds=400))
        after: float = await ctx.step.run("after", time.time)
        return after - before

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/sleep"})

    assert result.status == "Completed"
    assert result.output >= 0.4
    nap = result.steps[1]
    assert (nap["op"], nap["status"]) == ("sleep", "Completed")


async def test_sleep_until_a_datetime(client: tideflow.Client, engine_for: EngineFactory) -> None:
    @client.create_function(fn_id="until", trigger=tideflow.TriggerEvent(event="t/until"))
    async def until(ctx: tideflow.Context) -> bool:
        target = datetime.datetime.fromisoformat(ctx.event.data["at"])
        await ctx.step.sleep_until("until", target)
        now = await ctx.step.run("now", lambda: datetime.datetime.now(datetime.UTC).isoformat())
        return datetime.datetime.fromisoformat(now) >= target

    async with engine_for(client) as engine:
        at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(milliseconds=300)
        result = await engine.finish({"name": "t/until", "data": {"at": at.isoformat()}})

    assert (result.status, result.output) == ("Completed", True)


async def test_parallel_steps_return_results_in_order(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    calls: list[str] = []

    async def slow(name: str) -> str:
        calls.append(name)
        await asyncio.sleep(0.05)
        return name.upper()

    @client.create_function(fn_id="fan-out", trigger=tideflow.TriggerEvent(event="t/fan"))
    async def fan_out(ctx: tideflow.Context) -> dict[str, Any]:
        grouped = await ctx.group.parallel(
            (lambda: ctx.step.run("a", slow, "a"), lambda: ctx.step.run("b", slow, "b"))
        )
        gathered = await asyncio.gather(ctx.step.run("c", slow, "c"), ctx.step.run("d", slow, "d"))
        return {"grouped": list(grouped), "gathered": list(gathered)}

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/fan"})

    assert result.output == {"grouped": ["A", "B"], "gathered": ["C", "D"]}
    assert sorted(calls) == ["a", "b", "c", "d"]


async def test_send_event_step_sends_once_and_triggers_other_functions(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="sender", trigger=tideflow.TriggerEvent(event="t/send"))
    async def sender(ctx: tideflow.Context) -> list[str]:
        ids = await ctx.step.send_event(
            "notify", [tideflow.Event(name="t/notified", data={"n": 1})]
        )
        await ctx.step.sleep("nap", 20)
        return ids

    @client.create_function(fn_id="receiver", trigger=tideflow.TriggerEvent(event="t/notified"))
    async def receiver(ctx: tideflow.Context) -> int:
        n: int = ctx.event.data["n"]
        return n + 1

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/send"})
        (sent_id,) = result.output
        (child,) = await engine.wait_for_runs(sent_id)
        child = await engine.wait_for_run(child["run_id"])
        listed = (await engine.http.get("/v1/events", params={"name": "t/notified"})).json()["data"]

    assert child["output"] == 2
    assert [event["internal_id"] for event in listed] == [sent_id]


async def test_a_run_over_the_step_limit_fails_with_a_clear_error(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="endless", trigger=tideflow.TriggerEvent(event="t/endless"))
    async def endless(ctx: tideflow.Context) -> None:
        for n in range(1_001):
            await ctx.step.run("tick", lambda n=n: n)

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/endless"}, timeout_s=60)

    assert result.status == "Failed"
    assert result.run["error"]["name"] == "LimitError"
    assert "the limit is 1000 steps a run" in result.run["error"]["message"]
    assert len(result.steps) == 1_000
