"""Batching: events accumulate per key into runs of up to `max_size`, started when full or
`timeout` after the first; `ctx.events` holds them in arrival order, `ctx.event` the first."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import tideflow
from tideflow.testing import Engine, EngineFactory


def collect(client: tideflow.Client, batch: tideflow.Batch) -> None:
    @client.create_function(
        fn_id="batched", trigger=tideflow.TriggerEvent(event="t/item"), batch_events=batch
    )
    async def batched(ctx: tideflow.Context) -> dict[str, Any]:
        return {
            "ns": [event.data["n"] for event in ctx.events],
            "ids": [event.id for event in ctx.events],
            "first": ctx.event.data["n"],
        }


async def send_each(engine: Engine, datas: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = []
    for data in datas:
        ids.extend(await engine.send({"name": "t/item", "data": data}))
    return ids


async def outputs(engine: Engine, ids: list[str], *, runs: int) -> list[dict[str, Any]]:
    """The outputs of the `runs` runs started by these events, in the order of their events."""
    found: list[dict[str, Any]] = []
    for event_id in ids:
        found.extend(await engine.runs(event_id))
    assert len(found) == runs, [run["event_id"] for run in found]
    ended = [await engine.wait_for_run(run["run_id"]) for run in found]
    assert [run["status"] for run in ended] == ["Completed"] * runs
    return [run["output"] for run in ended]


def each_once(ids: list[str], results: list[dict[str, Any]]) -> bool:
    batched = [event_id for result in results for event_id in result["ids"]]
    return sorted(batched) == sorted(ids)


async def test_full_batches_start_at_once_and_the_rest_after_the_timeout(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    collect(client, tideflow.Batch(max_size=3, timeout="1s"))

    async with engine_for(client) as engine:
        ids = await send_each(engine, [{"n": n} for n in range(7)])
        await engine.wait_for_runs(ids[3])
        before_timeout = await engine.runs(ids[6])
        await engine.wait_for_runs(ids[6])
        results = await outputs(engine, ids, runs=3)

    assert before_timeout == []
    assert results == [
        {"ns": [0, 1, 2], "ids": ids[0:3], "first": 0},
        {"ns": [3, 4, 5], "ids": ids[3:6], "first": 3},
        {"ns": [6], "ids": ids[6:], "first": 6},
    ]


async def test_each_key_has_its_own_batch(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    collect(client, tideflow.Batch(max_size=2, timeout="1s", key="event.data.user"))

    async with engine_for(client) as engine:
        datas = [{"user": u, "n": n} for n, u in enumerate(["ada", "bob", "ada", "bob", "ada"])]
        ids = await send_each(engine, datas)
        await engine.wait_for_runs(ids[4], timeout_s=10)
        results = await outputs(engine, ids, runs=3)

    assert [result["ns"] for result in results] == [[0, 2], [1, 3], [4]]
    assert each_once(ids, results)


async def test_events_for_which_if_exp_is_false_each_run_alone(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    collect(client, tideflow.Batch(max_size=3, timeout="1s", if_exp="event.data.group"))

    async with engine_for(client) as engine:
        datas = [{"n": n, "group": n % 2 == 0} for n in range(5)]
        ids = await send_each(engine, datas)
        await engine.wait_for_runs(ids[0])
        results = await outputs(engine, ids, runs=3)

    assert results == [
        {"ns": [0, 2, 4], "ids": ids[0::2], "first": 0},
        {"ns": [1], "ids": [ids[1]], "first": 1},
        {"ns": [3], "ids": [ids[3]], "first": 3},
    ]


async def test_every_event_of_concurrent_sends_reaches_exactly_one_run(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    collect(client, tideflow.Batch(max_size=4, timeout="1s"))

    async with engine_for(client) as engine:
        sends = [
            engine.send(*({"name": "t/item", "data": {"n": 10 * s + n}} for n in range(5)))
            for s in range(6)
        ]
        ids = [event_id for sent in await asyncio.gather(*sends) for event_id in sent]
        results: list[dict[str, Any]] = []
        for _ in range(250):
            found = [run for event_id in ids for run in await engine.runs(event_id)]
            if len(found) == 8:
                results = await outputs(engine, ids, runs=8)
                break
            await asyncio.sleep(0.02)

    # 30 events: seven full batches of 4, then one of 2 after the timeout.
    assert sorted(len(result["ns"]) for result in results) == [2, 4, 4, 4, 4, 4, 4, 4]
    assert each_once(ids, results)
    assert all(result["first"] == result["ns"][0] for result in results)


async def test_batched_runs_obey_the_functions_concurrency_limit(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    spans: list[tuple[float, float]] = []

    async def work(seconds: float) -> None:
        start = time.monotonic()
        await asyncio.sleep(seconds)
        spans.append((start, time.monotonic()))

    @client.create_function(
        fn_id="batched-limited",
        trigger=tideflow.TriggerEvent(event="t/item"),
        batch_events=tideflow.Batch(max_size=2, timeout="1s"),
        concurrency=1,
    )
    async def batched_limited(ctx: tideflow.Context) -> list[int]:
        await ctx.step.run("work", work, 0.2)
        return [event.data["n"] for event in ctx.events]

    async with engine_for(client) as engine:
        ids = await engine.send(*({"name": "t/item", "data": {"n": n}} for n in range(6)))
        runs = [(await engine.wait_for_runs(ids[n]))[0] for n in (0, 2, 4)]
        ended = [await engine.wait_for_run(run["run_id"]) for run in runs]

    assert [run["output"] for run in ended] == [[0, 1], [2, 3], [4, 5]]
    # The three runs started together; one slot made their steps take turns.
    spans.sort()
    assert len(spans) == 3
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans))
