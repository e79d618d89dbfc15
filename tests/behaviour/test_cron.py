from __future__ import annotations

import asyncio
import datetime
import time
from typing import Any

import tideflow
from tideflow.testing import Engine


def clock_just_before_a_minute(seconds_before: float = 0.5) -> tuple[float, Any]:
    """A clock running at real speed from `seconds_before` the next whole minute."""
    now = time.time()
    start = (now // 60 + 1) * 60 - seconds_before
    offset = start - now
    return start, lambda: time.time() + offset


async def test_a_cron_trigger_starts_a_run_at_each_tick_with_the_timer_event(
    backend_environ: dict[str, str],
) -> None:
    client = tideflow.Client(app_id="cron")

    @client.create_function(fn_id="nightly", trigger=tideflow.TriggerCron(cron="* * * * *"))
    async def nightly(ctx: tideflow.Context) -> dict[str, Any]:
        return {"name": ctx.event.name, "data": ctx.event.data, "ts": ctx.event.ts}

    start, clock = clock_just_before_a_minute()
    async with Engine(client, environ=backend_environ, clock=clock) as engine:
        runs: list[dict[str, Any]] = []
        for _ in range(300):
            events = (
                await engine.http.get("/v1/events", params={"name": "tideflow/scheduled.timer"})
            ).json()["data"]
            if events:
                runs = await engine.wait_for_runs(events[0]["internal_id"])
                break
            await asyncio.sleep(0.02)
        assert runs, "no tick within 6 s of the minute"
        run = await engine.wait_for_run(runs[0]["run_id"])

    tick_ms = int((start + 0.5) * 1000)
    assert run["function_id"] == "cron-nightly"
    assert run["output"] == {
        "name": "tideflow/scheduled.timer",
        "data": {"cron": "* * * * *"},
        "ts": tick_ms,
    }
    assert datetime.datetime.fromtimestamp(tick_ms / 1000, tz=datetime.UTC).second == 0
