"""Checkpointing, event ids inside functions, cancellation leaving nothing behind, and the step
deadline: seen through the SDK and the HTTP API, on every backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import tideflow
from tideflow.testing import EngineFactory


async def _eventually(check: Any, *, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {check}")
        await asyncio.sleep(0.02)


async def _jobs_run(http: Any) -> float:
    """Step jobs this process's workers have run, from the public /metrics page."""
    text = (await http.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tideflow_worker_jobs_total{")
    )


# Event ids


async def test_every_event_a_function_sees_carries_an_id(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    seen: dict[str, Any] = {}

    @client.create_function(fn_id="ids", trigger=tideflow.TriggerEvent(event="t/ids"))
    async def ids(ctx: tideflow.Context) -> dict[str, Any]:
        seen["event"] = ctx.event.id
        seen["events"] = [event.id for event in ctx.events]
        done = await ctx.step.wait_for_event(
            "wait", event="t/ids.done", timeout="10s", if_exp="event.data.k == async.data.k"
        )
        assert done is not None
        return {"waited": done.id}

    @client.create_function(
        fn_id="on-finish",
        trigger=tideflow.TriggerEvent(
            event="tideflow/function.finished", expression="event.data.function_id == 'test-ids'"
        ),
    )
    async def on_finish(ctx: tideflow.Context) -> Any:
        return {"finished_id": ctx.event.id, "inner_id": ctx.event.data["event"]["id"]}

    async with engine_for(client) as engine:
        (sent,) = await engine.send({"name": "t/ids", "data": {"k": 1}})
        (run,) = await engine.wait_for_runs(sent)
        await engine.wait_for_run(run["run_id"], status=["Running"])
        await asyncio.sleep(0.3)
        (resolving,) = await engine.send({"name": "t/ids.done", "data": {"k": 1}, "id": "mine"})
        ended = await engine.wait_for_run(run["run_id"])

        async def finished() -> list[dict[str, Any]]:
            answer = await engine.http.get(
                "/v1/events", params={"name": "tideflow/function.finished"}
            )
            return [e for e in answer.json()["data"] if e["data"]["function_id"] == "test-ids"]

        listed = await _eventually(finished)
        (follow_up,) = await engine.wait_for_runs(listed[0]["internal_id"])
        follow_up = await engine.wait_for_run(follow_up["run_id"])

    assert resolving != "mine"
    assert seen == {"event": sent, "events": [sent]}
    assert ended["output"] == {"waited": "mine"}
    assert follow_up["output"] == {"finished_id": listed[0]["internal_id"], "inner_id": sent}


# Checkpointing


@pytest.mark.parametrize(
    ("checkpointing", "jobs_expected"),
    # Without checkpointing, one job per step: the last one also sees the handler return.
    [(None, 1), (False, 3)],
)
async def test_checkpointing_runs_steps_in_one_job_or_hands_back_after_each(
    client: tideflow.Client,
    engine_for: EngineFactory,
    checkpointing: bool | None,
    jobs_expected: int,
) -> None:
    attempts: list[int] = []

    @client.create_function(
        fn_id="chain",
        trigger=tideflow.TriggerEvent(event="t/chain"),
        checkpointing=checkpointing,
    )
    async def chain(ctx: tideflow.Context) -> int:
        total = 0
        for n in range(3):
            total += await ctx.step.run(f"s{n}", lambda n=n: n + 1)
        attempts.append(ctx.attempt)
        return total

    async with engine_for(client) as engine:
        before = await _jobs_run(engine.http)
        result = await engine.finish({"name": "t/chain"})
        jobs = await _jobs_run(engine.http) - before

    assert result.output == 6
    assert [step["name"] for step in result.steps] == ["s0", "s1", "s2"]
    assert jobs == jobs_expected


async def test_a_finished_step_is_written_while_the_next_one_runs(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "second"

    @client.create_function(fn_id="two", trigger=tideflow.TriggerEvent(event="t/two"))
    async def two(ctx: tideflow.Context) -> list[str]:
        first = await ctx.step.run("first", lambda: "first")
        second = await ctx.step.run("second", slow)
        return [first, second]

    async with engine_for(client) as engine:
        (sent,) = await engine.send({"name": "t/two"})
        (run,) = await engine.wait_for_runs(sent)

        async def first_recorded() -> list[dict[str, Any]]:
            return [s for s in await engine.steps(run["run_id"]) if s["name"] == "first"]

        (recorded,) = await _eventually(first_recorded)
        running = await engine.run(run["run_id"])
        release.set()
        ended = await engine.wait_for_run(run["run_id"])

    assert (recorded["status"], recorded["output"]) == ("Completed", "first")
    assert running["status"] == "Running"
    assert ended["output"] == ["first", "second"]


async def test_buffered_steps_are_written_once_the_interval_passes(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    release = asyncio.Event()

    async def slow() -> int:
        await release.wait()
        return 3

    @client.create_function(
        fn_id="buffered",
        trigger=tideflow.TriggerEvent(event="t/buffered"),
        checkpointing=tideflow.Checkpointing(buffered_steps=10, max_interval="100ms"),
    )
    async def buffered(ctx: tideflow.Context) -> int:
        one = await ctx.step.run("one", lambda: 1)
        two = await ctx.step.run("two", lambda: 2)
        three: int = await ctx.step.run("three", slow)
        return int(one + two + three)

    async with engine_for(client) as engine:
        (sent,) = await engine.send({"name": "t/buffered"})
        (run,) = await engine.wait_for_runs(sent)

        async def two_recorded() -> list[str]:
            names = [s["name"] for s in await engine.steps(run["run_id"])]
            return names if len(names) == 2 else []

        names = await _eventually(two_recorded)
        release.set()
        ended = await engine.wait_for_run(run["run_id"])

    assert names == ["one", "two"]
    assert ended["output"] == 6


# Cancellation leaves nothing behind


async def test_a_run_cancelled_during_a_step_starts_no_further_step(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    calls: list[str] = []

    async def first() -> str:
        calls.append("first")
        started.set()
        await release.wait()
        return "first"

    def second() -> str:
        calls.append("second")
        return "second"

    @client.create_function(fn_id="cancel-me", trigger=tideflow.TriggerEvent(event="t/cancel"))
    async def cancel_me(ctx: tideflow.Context) -> None:
        await ctx.step.run("first", first)
        await ctx.step.run("second", second)
        await ctx.step.wait_for_signal("signal", signal="the-signal", timeout="1h")

    async with engine_for(client) as engine:
        (sent,) = await engine.send({"name": "t/cancel"})
        (run,) = await engine.wait_for_runs(sent)
        await asyncio.wait_for(started.wait(), 10)
        answer = await engine.http.delete(f"/v1/runs/{run['run_id']}")
        release.set()
        await asyncio.sleep(0.5)
        steps = await engine.steps(run["run_id"])
        calls_of_the_cancelled_run = list(calls)
        # The signal was never taken by the cancelled run: a new run may wait on it.
        (again,) = await engine.send({"name": "t/cancel"})
        (second_run,) = await engine.wait_for_runs(again)
        await engine.wait_for_run(second_run["run_id"], status=["Running"])

        async def signalled() -> Any:
            answer = await engine.http.post("/v1/signals", json={"signal": "the-signal"})
            return answer.json() if answer.status_code == 200 else None

        taken_by = await _eventually(signalled)

    assert answer.status_code == 200
    assert answer.json()["data"]["status"] == "Cancelled"
    assert answer.json()["data"]["error"]["name"] == "Cancelled"
    assert calls_of_the_cancelled_run == ["first"]
    assert steps == []
    assert taken_by["run_id"] == second_run["run_id"]


async def test_a_run_cancelled_while_it_waits_keeps_no_wait_or_timer(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="waiter", trigger=tideflow.TriggerEvent(event="t/waiter"))
    async def waiter(ctx: tideflow.Context) -> None:
        await ctx.step.wait_for_signal("signal", signal="approve", timeout="1h")

    async with engine_for(client) as engine:
        (sent,) = await engine.send({"name": "t/waiter"})
        (run,) = await engine.wait_for_runs(sent)

        async def waiting() -> bool:
            return any(s["status"] == "Waiting" for s in await engine.steps(run["run_id"]))

        await _eventually(waiting)
        await engine.http.delete(f"/v1/runs/{run['run_id']}")
        refused = await engine.http.post("/v1/signals", json={"signal": "approve"})
        next_timer = await engine.store.next_timer_due()

    assert refused.status_code == 404
    assert next_timer is None


# The step deadline


async def test_a_step_running_past_the_deadline_fails_with_step_timeout_and_is_retried(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    async def slow_at_first(attempt: Any) -> str:
        if attempt() == 0:
            await asyncio.sleep(30)
        return "quick"

    @client.create_function(
        fn_id="slow-once", trigger=tideflow.TriggerEvent(event="t/slow-once"), retries=1
    )
    async def slow_once(ctx: tideflow.Context) -> str:
        return str(await ctx.step.run("maybe-slow", slow_at_first, lambda: ctx.attempt))

    @client.create_function(
        fn_id="always-slow", trigger=tideflow.TriggerEvent(event="t/always-slow"), retries=0
    )
    async def always_slow(ctx: tideflow.Context) -> None:
        await ctx.step.run("slow", asyncio.sleep, 30)

    async with engine_for(client, TIDEFLOW_STEP_TIMEOUT_S="0.5") as engine:
        retried = await engine.finish({"name": "t/slow-once"})
        failed = await engine.finish({"name": "t/always-slow"})

    assert retried.output == "quick"
    assert retried.steps[0]["attempt"] == 1
    assert failed.status == "Failed"
    assert failed.steps[0]["error"]["name"] == "StepTimeout"
    assert "after 0.5s" in failed.steps[0]["error"]["message"]
    assert failed.run["error"]["name"] == "StepTimeout"
