"""Debounce: a burst of events starts one run, a period after its last event, with that event."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import tideflow
from tideflow.testing import Engine, EngineFactory


def echo(client: tideflow.Client, debounce: tideflow.Debounce) -> None:
    @client.create_function(
        fn_id="debounced", trigger=tideflow.TriggerEvent(event="t/typed"), debounce=debounce
    )
    async def debounced(ctx: tideflow.Context) -> dict[str, Any]:
        return {"data": ctx.event.data, "id": ctx.event.id, "count": len(ctx.events)}


async def send_spaced(engine: Engine, datas: list[dict[str, Any]], gap_s: float) -> list[str]:
    ids: list[str] = []
    for data in datas:
        if ids:
            await asyncio.sleep(gap_s)
        ids.extend(await engine.send({"name": "t/typed", "data": data}))
    return ids


async def received_ms(engine: Engine, event_id: str) -> int:
    response = await engine.http.get("/v1/events", params={"name": "t/typed", "limit": 100})
    (event,) = [e for e in response.json()["data"] if e["internal_id"] == event_id]
    ts: int = event["ts"]
    return ts


def started_ms(run: dict[str, Any]) -> int:
    moment = datetime.datetime.fromisoformat(run["run_started_at"].replace("Z", "+00:00"))
    return int(moment.timestamp() * 1000)


async def runs_of(engine: Engine, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    return {event_id: await engine.runs(event_id) for event_id in ids}


async def test_a_burst_starts_one_run_with_its_last_event_a_period_after_it(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    echo(client, tideflow.Debounce(period="1s"))

    async with engine_for(client) as engine:
        ids = await send_spaced(engine, [{"n": n} for n in range(5)], 0.2)
        (run,) = await engine.wait_for_runs(ids[-1])
        run = await engine.wait_for_run(run["run_id"])
        last_ms = await received_ms(engine, ids[-1])
        earlier = await runs_of(engine, ids[:-1])
        listed = (await engine.http.get("/v1/events", params={"name": "t/typed"})).json()["data"]

        # After the run has started, the next event opens a new burst.
        (after,) = await send_spaced(engine, [{"n": 5}], 0)
        (second,) = await engine.wait_for_runs(after)
        second = await engine.wait_for_run(second["run_id"])

    assert run["status"] == "Completed"
    assert run["output"] == {"data": {"n": 4}, "id": ids[-1], "count": 1}
    assert started_ms(run) >= last_ms + 1000
    assert earlier == {event_id: [] for event_id in ids[:-1]}
    assert sorted(e["internal_id"] for e in listed) == sorted(ids)
    assert second["output"] == {"data": {"n": 5}, "id": after, "count": 1}


async def test_keys_debounce_independently(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    echo(client, tideflow.Debounce(period="1s", key="event.data.user"))

    async with engine_for(client) as engine:
        datas = [{"user": user, "n": n} for n in range(3) for user in ("ada", "bob")]
        ids = await send_spaced(engine, datas, 0.1)
        (ada,) = await engine.wait_for_runs(ids[-2])
        (bob,) = await engine.wait_for_runs(ids[-1])
        ada = await engine.wait_for_run(ada["run_id"])
        bob = await engine.wait_for_run(bob["run_id"])
        earlier = await runs_of(engine, ids[:-2])

    assert ada["output"] == {"data": {"user": "ada", "n": 2}, "id": ids[-2], "count": 1}
    assert bob["output"] == {"data": {"user": "bob", "n": 2}, "id": ids[-1], "count": 1}
    assert earlier == {event_id: [] for event_id in ids[:-2]}


async def test_the_timeout_caps_the_delay_in_a_continuous_stream(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    echo(client, tideflow.Debounce(period="1s", timeout="2s"))

    async with engine_for(client) as engine:
        ids = await send_spaced(engine, [{"n": n} for n in range(14)], 0.3)
        during = {i: runs for i, runs in (await runs_of(engine, ids)).items() if runs}
        (last,) = await engine.wait_for_runs(ids[-1])
        runs = {i: runs for i, runs in (await runs_of(engine, ids)).items() if runs}
        first_ms = await received_ms(engine, ids[0])
        started = [await engine.wait_for_run(run["run_id"]) for (run,) in runs.values()]

    # A run started while events still came every 0.3 s (the window never closed by itself),
    # no sooner than 2 s after the burst's first event.
    assert during, "no run started before the stream ended"
    first_held = min(during, key=ids.index)
    assert first_held not in (ids[0], ids[-1])
    assert all(run["status"] == "Completed" for run in started)
    assert min(started_ms(run) for run in started) >= first_ms + 2000
    # Every run has one event, the last event's burst ends with a run of its own.
    assert all(run["output"]["count"] == 1 for run in started)
    assert last["event_id"] == ids[-1]
    assert len(runs) >= 2
