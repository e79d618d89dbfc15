"""Throttle: runs start on the GCRA schedule, in arrival order, and every event gets its run."""

from __future__ import annotations

import datetime
from typing import Any

import tideflow
from tideflow.testing import EngineFactory

TOLERANCE_S = 0.45


def started(run: dict[str, Any]) -> float:
    return datetime.datetime.fromisoformat(run["run_started_at"]).timestamp()


async def all_runs(engine: Any, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run of each event, in the order sent, once each has ended."""
    event_ids = await engine.send(*events)
    runs = [(await engine.wait_for_runs(event_id))[0] for event_id in event_ids]
    return [await engine.wait_for_run(run["run_id"], timeout_s=20) for run in runs]


async def test_a_burst_starts_back_to_back_then_one_per_interval_in_order(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="throttled",
        trigger=tideflow.TriggerEvent(event="t/throttled"),
        throttle=tideflow.Throttle(limit=1, period="1s", burst=2),
    )
    async def throttled(ctx: tideflow.Context) -> Any:
        return ctx.event.data["n"]

    async with engine_for(client) as engine:
        ended = await all_runs(
            engine, [{"name": "t/throttled", "data": {"n": n}} for n in range(5)]
        )

    assert [run["status"] for run in ended] == ["Completed"] * 5
    assert [run["output"] for run in ended] == [0, 1, 2, 3, 4]
    first = started(ended[0])
    offsets = [started(run) - first for run in ended]
    # Two at once (the burst), then one a second, in the order the events came.
    for offset, expected in zip(offsets, [0, 0, 1, 2, 3], strict=True):
        assert abs(offset - expected) < TOLERANCE_S, offsets


async def test_keys_are_throttled_apart(client: tideflow.Client, engine_for: EngineFactory) -> None:
    @client.create_function(
        fn_id="per-key",
        trigger=tideflow.TriggerEvent(event="t/per-key"),
        throttle=tideflow.Throttle(limit=1, period="2s", key="event.data.k"),
    )
    async def per_key(ctx: tideflow.Context) -> Any:
        return ctx.event.data["k"]

    events = [{"name": "t/per-key", "data": {"k": k}} for k in ("a", "b", "a", "b")]
    async with engine_for(client) as engine:
        a1, b1, a2, b2 = await all_runs(engine, events)

    assert {run["status"] for run in (a1, b1, a2, b2)} == {"Completed"}
    assert abs(started(b1) - started(a1)) < TOLERANCE_S  # b did not wait for a
    assert abs(started(a2) - started(a1) - 2) < TOLERANCE_S
    assert abs(started(b2) - started(b1) - 2) < TOLERANCE_S


async def test_a_throttled_run_is_queued_until_its_turn_and_can_be_cancelled(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="slow-start",
        trigger=tideflow.TriggerEvent(event="t/slow-start"),
        throttle=tideflow.Throttle(limit=1, period="30s"),
    )
    async def slow_start(ctx: tideflow.Context) -> Any:
        return ctx.event.data["n"]

    async with engine_for(client) as engine:
        first, second = await engine.send(
            *[{"name": "t/slow-start", "data": {"n": n}} for n in range(2)]
        )
        (first_run,) = await engine.wait_for_runs(first)
        (second_run,) = await engine.wait_for_runs(second)
        assert (await engine.wait_for_run(first_run["run_id"]))["status"] == "Completed"
        waiting = await engine.run(second_run["run_id"])
        cancelled = await engine.http.delete(f"/v1/runs/{second_run['run_id']}")

    assert waiting["status"] == "Queued"
    assert waiting["run_started_at"] is None
    assert cancelled.json()["data"]["status"] == "Cancelled"
