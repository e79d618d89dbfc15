"""Holds and gates together: events a rate limit or idempotency drops are never held, and the
run a debounce or a batch starts passes singleton and throttle like any run."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import tideflow
from tideflow.testing import Engine, EngineFactory


def started(run: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(run["run_started_at"]).timestamp()


async def runs_of(engine: Engine, event_ids: list[str]) -> list[dict[str, Any]]:
    return [run for event_id in event_ids for run in await engine.runs(event_id)]


async def test_idempotency_drops_an_event_before_a_debounce_holds_it(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="debounced-once",
        trigger=tideflow.TriggerEvent(event="t/typed"),
        debounce=tideflow.Debounce(period="1s"),
        idempotency="event.data.doc",
    )
    async def debounced_once(ctx: tideflow.Context) -> Any:
        return ctx.event.data

    async with engine_for(client) as engine:
        # The second event of doc 1 is dropped as it arrives, so it never becomes the burst's
        # last event: doc 2's does.
        ids = await engine.send(
            {"name": "t/typed", "data": {"doc": 1, "n": 0}},
            {"name": "t/typed", "data": {"doc": 2, "n": 1}},
            {"name": "t/typed", "data": {"doc": 1, "n": 2}},
        )
        (run,) = await engine.wait_for_runs(ids[1], timeout_s=10)
        ended = await engine.wait_for_run(run["run_id"])
        await asyncio.sleep(1.5)  # time for a second run, were there one
        all_runs = await runs_of(engine, ids)

    assert [r["run_id"] for r in all_runs] == [ended["run_id"]]
    assert ended["output"] == {"doc": 2, "n": 1}


async def test_a_run_a_batch_starts_is_throttled_like_any_run(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="batched-throttled",
        trigger=tideflow.TriggerEvent(event="t/item"),
        batch_events=tideflow.Batch(max_size=2, timeout="5s"),
        throttle=tideflow.Throttle(limit=1, period="2s"),
    )
    async def batched(ctx: tideflow.Context) -> Any:
        return [event.data["n"] for event in ctx.events]

    async with engine_for(client) as engine:
        ids = await engine.send(*[{"name": "t/item", "data": {"n": n}} for n in range(4)])
        first = (await engine.wait_for_runs(ids[0]))[0]
        second = (await engine.wait_for_runs(ids[2]))[0]
        first = await engine.wait_for_run(first["run_id"])
        second = await engine.wait_for_run(second["run_id"], timeout_s=15)

    assert (first["output"], second["output"]) == ([0, 1], [2, 3])
    # Both batches filled at once; the throttle started the second one period later.
    assert abs(started(second) - started(first) - 2) < 0.45


async def test_singleton_skip_applies_to_the_run_a_debounce_starts(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    release = asyncio.Event()

    @client.create_function(
        fn_id="debounced-single",
        trigger=tideflow.TriggerEvent(event="t/save"),
        debounce=tideflow.Debounce(period="1s"),
        singleton=tideflow.Singleton(mode="skip"),
    )
    async def debounced_single(ctx: tideflow.Context) -> Any:
        await ctx.step.run("work", release.wait)
        return ctx.event.data["n"]

    async with engine_for(client) as engine:
        (first,) = await engine.send({"name": "t/save", "data": {"n": 1}})
        (run,) = await engine.wait_for_runs(first)
        await engine.wait_for_run(run["run_id"], status=["Running"])
        # A second burst ends while the first run still runs: its run is skipped.
        (second,) = await engine.send({"name": "t/save", "data": {"n": 2}})
        await asyncio.sleep(2.0)
        skipped = await engine.runs(second)
        release.set()
        ended = await engine.wait_for_run(run["run_id"])

    assert skipped == []
    assert ended["output"] == 1
