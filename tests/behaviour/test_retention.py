"""Retention (`TIDEFLOW_RETENTION`): finished runs, their steps and events that started no live
run are deleted once they are older than the retention; live runs and their events are not."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import tideflow
from tideflow.testing import Engine

HOUR_S = 3600.0


class JumpingClock:
    """Real time plus an offset a test moves forward."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset_s


def define_functions(client: tideflow.Client) -> None:
    @client.create_function(fn_id="done", trigger=tideflow.TriggerEvent(event="t/done"))
    async def done(ctx: tideflow.Context) -> Any:
        return await ctx.step.run("echo", lambda: ctx.event.data)

    @client.create_function(fn_id="boom", trigger=tideflow.TriggerEvent(event="t/boom"), retries=0)
    async def boom(ctx: tideflow.Context) -> None:
        raise tideflow.NonRetriableError("boom")

    @client.create_function(fn_id="sleeper", trigger=tideflow.TriggerEvent(event="t/sleep"))
    async def sleeper(ctx: tideflow.Context) -> str:
        await ctx.step.run("before", lambda: "before")
        await ctx.step.sleep("long", "30d")
        return "woke"

    @client.create_function(
        fn_id="batched",
        trigger=tideflow.TriggerEvent(event="t/batch"),
        batch_events=tideflow.Batch(max_size=10, timeout="1m"),
    )
    async def batched(ctx: tideflow.Context) -> int:
        return len(ctx.events)

    @client.create_function(
        fn_id="debounced",
        trigger=tideflow.TriggerEvent(event="t/debounce"),
        debounce=tideflow.Debounce(period="1d"),
    )
    async def debounced(ctx: tideflow.Context) -> None:
        return None


async def status_of(engine: Engine, path: str) -> int:
    return (await engine.http.get(path)).status_code


async def until_gone(engine: Engine, paths: list[str], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = {path: await status_of(engine, path) for path in paths}
        if set(statuses.values()) == {404}:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not deleted by retention: {statuses}")
        await asyncio.sleep(0.1)


async def test_finished_runs_and_their_events_go_after_retention_and_live_runs_stay(
    backend_environ: dict[str, str], request: pytest.FixtureRequest, figures: list[str]
) -> None:
    client = tideflow.Client(app_id="keep")
    define_functions(client)
    clock = JumpingClock()
    environ = {**backend_environ, "TIDEFLOW_RETENTION": "1h", "TIDEFLOW_LEASE_S": "1.5"}
    async with Engine(client, environ=environ, clock=clock) as engine:
        # Given a completed run, a failed run, a sleeping run, an event that starts none, and
        # events a batch and a debounce hold
        (
            done_event,
            boom_event,
            sleep_event,
            lone_event,
            batch_event,
            debounce_event,
        ) = await engine.send(
            {"name": "t/done", "data": {"n": 1}},
            {"name": "t/boom"},
            {"name": "t/sleep"},
            {"name": "t/nobody"},
            {"name": "t/batch"},
            {"name": "t/debounce"},
        )
        done_run = (await engine.wait_for_runs(done_event))[0]["run_id"]
        boom_run = (await engine.wait_for_runs(boom_event))[0]["run_id"]
        sleep_run = (await engine.wait_for_runs(sleep_event))[0]["run_id"]
        assert (await engine.wait_for_run(done_run))["status"] == "Completed"
        assert (await engine.wait_for_run(boom_run))["status"] == "Failed"
        await until_steps(engine, sleep_run, 2)
        # Within the retention nothing goes, over several sweeps
        await asyncio.sleep(2.0)
        for path in (f"/v1/runs/{done_run}", f"/v1/runs/{boom_run}", f"/v1/events/{lone_event}"):
            assert await status_of(engine, path) == 200, path

        # When the clock passes the retention
        clock.offset_s = 2 * HOUR_S
        await until_gone(
            engine,
            [
                f"/v1/runs/{done_run}",
                f"/v1/runs/{boom_run}",
                f"/v1/events/{done_event}",
                f"/v1/events/{boom_event}",
                f"/v1/events/{lone_event}",
            ],
        )

        # Then the finished runs' steps went with them, and the sleeping run is whole
        assert (await engine.http.get(f"/v1/runs/{done_run}/steps")).json().get("data") in (
            None,
            [],
        )
        sleeping = await engine.run(sleep_run)
        assert sleeping["status"] == "Running"
        assert [step["name"] for step in await engine.steps(sleep_run)] == ["before", "long"]
        for kept in (sleep_event, batch_event, debounce_event):
            assert await status_of(engine, f"/v1/events/{kept}") == 200, kept
        assert [run["run_id"] for run in await engine.runs(sleep_event)] == [sleep_run]

        # And a run that ends now is kept for its own retention
        (fresh_event,) = await engine.send({"name": "t/done", "data": {"n": 2}})
        fresh_run = (await engine.wait_for_runs(fresh_event))[0]["run_id"]
        assert (await engine.wait_for_run(fresh_run))["output"] == {"n": 2}
        await asyncio.sleep(1.0)
        assert (await engine.run(fresh_run))["status"] == "Completed"
        assert await status_of(engine, f"/v1/events/{fresh_event}") == 200
    figures.append(
        f"retention [{request.node.callspec.id}]: 2 ended runs and 3 events past retention "
        "deleted (runs, steps, events answer 404); kept: 1 sleeping run with its steps and "
        "event, 2 events held by a batch and a debounce, 1 run ended after the cut-off; "
        "live runs lost 0"
    )


async def until_steps(engine: Engine, run_id: str, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(await engine.steps(run_id)) < count:
        assert time.monotonic() < deadline, await engine.steps(run_id)
        await asyncio.sleep(0.05)
