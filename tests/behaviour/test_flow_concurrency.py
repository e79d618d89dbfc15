"""Concurrency limits and priority: how many step bodies execute at once, and in what order
waiting runs get their turn, on every backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import tideflow
from tideflow.testing import EngineFactory


class Recorder:
    """When each step body ran, by label, to measure how many overlapped."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, float, float]] = []

    async def body(self, label: str, seconds: float) -> str:
        start = time.monotonic()
        await asyncio.sleep(seconds)
        self.spans.append((label, start, time.monotonic()))
        return label

    def peak(self, label_prefix: str = "") -> int:
        edges = sorted(
            edge
            for label, start, end in self.spans
            if label.startswith(label_prefix)
            for edge in ((start, 1), (end, -1))
        )
        running = peak = 0
        for _, change in edges:  # an end sorts before a start at the same instant
            running += change
            peak = max(peak, running)
        return peak

    def first_start(self, label: str) -> float:
        return min(start for name, start, _ in self.spans if name.startswith(label))


async def until_step_seen(engine: Any, run_id: str, step: str) -> None:
    for _ in range(500):
        if any(s["name"] == step for s in await engine.steps(run_id)):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"step {step} of run {run_id} never appeared")


async def finish_all(
    engine: Any, events: list[dict[str, Any]], timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    event_ids = await engine.send(*events)
    runs = [run for event_id in event_ids for run in await engine.wait_for_runs(event_id)]
    return [await engine.wait_for_run(run["run_id"], timeout_s=timeout_s) for run in runs]


async def test_a_limit_of_two_runs_exactly_two_step_bodies_at_once(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    recorder = Recorder()

    @client.create_function(
        fn_id="limited", trigger=tideflow.TriggerEvent(event="t/limited"), concurrency=2
    )
    async def limited(ctx: tideflow.Context) -> Any:
        n = ctx.event.data["n"]
        return [await ctx.step.run(f"s{i}", recorder.body, f"run{n}-s{i}", 0.05) for i in range(3)]

    async with engine_for(client) as engine:
        ended = await finish_all(
            engine, [{"name": "t/limited", "data": {"n": n}} for n in range(10)]
        )

    assert [run["status"] for run in ended] == ["Completed"] * 10
    assert len(recorder.spans) == 30
    assert recorder.peak() == 2


async def test_each_key_is_its_own_limit(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    recorder = Recorder()

    @client.create_function(
        fn_id="per-user",
        trigger=tideflow.TriggerEvent(event="t/per-user"),
        concurrency=[tideflow.Concurrency(limit=1, key="event.data.user")],
    )
    async def per_user(ctx: tideflow.Context) -> Any:
        user, n = ctx.event.data["user"], ctx.event.data["n"]
        return await ctx.step.run("work", recorder.body, f"{user}-{n}", 0.2)

    events = [{"name": "t/per-user", "data": {"user": u, "n": n}} for n in range(3) for u in "abc"]
    async with engine_for(client) as engine:
        ended = await finish_all(engine, events)

    assert [run["status"] for run in ended] == ["Completed"] * 9
    assert [recorder.peak(f"{user}-") for user in "abc"] == [1, 1, 1]
    # The keys did not wait for each other.
    assert recorder.peak() == 3


async def test_two_constraints_each_hold(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    recorder = Recorder()

    @client.create_function(
        fn_id="two-limits",
        trigger=tideflow.TriggerEvent(event="t/two"),
        concurrency=[
            tideflow.Concurrency(limit=2),
            tideflow.Concurrency(limit=1, key="event.data.user"),
        ],
    )
    async def two(ctx: tideflow.Context) -> Any:
        user, n = ctx.event.data["user"], ctx.event.data["n"]
        return await ctx.step.run("work", recorder.body, f"{user}-{n}", 0.15)

    events = [{"name": "t/two", "data": {"user": u, "n": n}} for n in range(3) for u in "abcd"]
    async with engine_for(client) as engine:
        ended = await finish_all(engine, events)

    assert [run["status"] for run in ended] == ["Completed"] * 12
    assert recorder.peak() == 2
    assert max(recorder.peak(f"{user}-") for user in "abcd") == 1


async def test_an_env_scoped_key_is_shared_by_functions(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    recorder = Recorder()
    shared = tideflow.Concurrency(limit=1, key='"payments-api"', scope="env")

    @client.create_function(
        fn_id="charge", trigger=tideflow.TriggerEvent(event="t/charge"), concurrency=[shared]
    )
    async def charge(ctx: tideflow.Context) -> Any:
        return await ctx.step.run("call", recorder.body, f"charge-{ctx.event.data['n']}", 0.1)

    @client.create_function(
        fn_id="refund", trigger=tideflow.TriggerEvent(event="t/refund"), concurrency=[shared]
    )
    async def refund(ctx: tideflow.Context) -> Any:
        return await ctx.step.run("call", recorder.body, f"refund-{ctx.event.data['n']}", 0.1)

    events = [
        {"name": name, "data": {"n": n}} for n in range(3) for name in ("t/charge", "t/refund")
    ]
    async with engine_for(client) as engine:
        ended = await finish_all(engine, events)

    assert [run["status"] for run in ended] == ["Completed"] * 6
    assert recorder.peak() == 1


async def test_a_sleeping_run_holds_no_slot(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    recorder = Recorder()

    @client.create_function(
        fn_id="sleeper", trigger=tideflow.TriggerEvent(event="t/sleeper"), concurrency=1
    )
    async def sleeper(ctx: tideflow.Context) -> None:
        name = ctx.event.data["name"]
        await ctx.step.run("before", recorder.body, f"{name}-before", 0.05)
        if name == "sleepy":
            await ctx.step.sleep("nap", "2s")
        await ctx.step.run("after", recorder.body, f"{name}-after", 0.05)

    async with engine_for(client) as engine:
        (sleepy,) = await engine.send({"name": "t/sleeper", "data": {"name": "sleepy"}})
        (sleepy_run,) = await engine.wait_for_runs(sleepy)
        await until_step_seen(engine, sleepy_run["run_id"], "nap")
        ended = await finish_all(engine, [{"name": "t/sleeper", "data": {"name": "quick"}}])
        quick_done = time.monotonic()
        sleepy_ended = await engine.wait_for_run(sleepy_run["run_id"])

    assert ended[0]["status"] == sleepy_ended["status"] == "Completed"
    # The quick run went through while the sleepy one slept, not after it woke.
    assert quick_done < recorder.first_start("sleepy-after")
    assert recorder.peak() == 1


async def test_priority_lets_a_run_jump_the_line(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    recorder = Recorder()

    @client.create_function(
        fn_id="prioritised",
        trigger=tideflow.TriggerEvent(event="t/prioritised"),
        concurrency=1,
        priority=tideflow.Priority(run="event.data.priority"),
    )
    async def prioritised(ctx: tideflow.Context) -> Any:
        label = ctx.event.data["label"]
        return await ctx.step.run("work", recorder.body, label, 0.6 if label == "first" else 0.02)

    def event(label: str, priority: int) -> dict[str, Any]:
        return {"name": "t/prioritised", "data": {"label": label, "priority": priority}}

    async with engine_for(client) as engine:
        (first,) = await engine.send(event("first", 0))
        (first_run,) = await engine.wait_for_runs(first)
        await engine.wait_for_run(first_run["run_id"], status=["Running"])
        backlog = [event(f"low-{n}", 0) for n in range(4)]
        backlog += [event("urgent", 600), event("late", -600)]
        ended = await finish_all(engine, backlog)

    assert all(run["status"] == "Completed" for run in ended)
    order = [label for label, _, _ in sorted(recorder.spans, key=lambda span: span[1])]
    assert order == ["first", "urgent", "low-0", "low-1", "low-2", "low-3", "late"]
    assert recorder.peak() == 1
