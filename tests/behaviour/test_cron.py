from __future__ import annotations

import asyncio
import datetime
import pathlib
import time
import zoneinfo
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


class FastClock:
    """An engine's clock starting at `start` (epoch seconds) and running `factor` times faster
    than real time."""

    def __init__(self, start: float, factor: float) -> None:
        self.start, self.factor, self.began = start, factor, time.monotonic()

    def __call__(self) -> float:
        return self.start + (time.monotonic() - self.began) * self.factor


async def ticks(engine: Engine, cron: str) -> list[int]:
    """The scheduled times (ms) of the ticks `cron` has emitted, in order."""
    events = (
        await engine.http.get(
            "/v1/events", params={"name": "tideflow/scheduled.timer", "limit": 1000}
        )
    ).json()["data"]
    return sorted(e["ts"] for e in events if e["data"]["cron"] == cron)


def durable(backend_environ: dict[str, str], tmp_path: pathlib.Path) -> dict[str, str]:
    """The backend's settings, with a database that outlives one engine."""
    return backend_environ or {"TIDEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'cron.db'}"}


async def test_clocks_going_back_neither_double_a_daily_tick_nor_drop_an_hourly_one(
    backend_environ: dict[str, str],
) -> None:
    client = tideflow.Client(app_id="dst")
    daily, hourly = "TZ=America/New_York 30 1 * * *", "TZ=America/New_York 30 * * * *"
    for fn_id, cron in (("daily", daily), ("hourly", hourly)):
        client.create_function(fn_id=fn_id, trigger=tideflow.TriggerCron(cron=cron))(
            lambda ctx: None
        )
    new_york = zoneinfo.ZoneInfo("America/New_York")
    # 00:50 on the night New York's clocks go back from 02:00 EDT to 01:00 EST, 20 minutes of
    # engine time a second: 01:30 happens twice, 40 and 100 minutes in.
    start = datetime.datetime(2026, 11, 1, 0, 50, tzinfo=new_york).timestamp()
    clock = FastClock(start, factor=1200)
    async with Engine(client, environ=backend_environ, clock=clock) as engine:
        await asyncio.sleep(2 * 3600 / 1200)  # to 01:50 EST
        found = {cron: await ticks(engine, cron) for cron in (daily, hourly)}

    first_pass = int(datetime.datetime(2026, 11, 1, 5, 30, tzinfo=datetime.UTC).timestamp() * 1000)
    assert found[daily] == [first_pass]
    assert found[hourly] == [first_pass, first_pass + 3_600_000]


async def test_ticks_missed_while_no_scheduler_ran_start_one_run_on_recovery(
    backend_environ: dict[str, str], tmp_path: pathlib.Path
) -> None:
    client = tideflow.Client(app_id="missed")
    cron = "* * * * *"
    client.create_function(fn_id="minutely", trigger=tideflow.TriggerCron(cron=cron))(
        lambda ctx: None
    )
    environ = durable(backend_environ, tmp_path)
    start = datetime.datetime(2026, 6, 1, 12, 0, 30, tzinfo=datetime.UTC).timestamp()
    async with Engine(client, environ=environ, clock=FastClock(start, 1)):
        await asyncio.sleep(1.0)  # registers the 12:01 tick; none is due yet
    # Every scheduler was down for ten minutes.
    later = FastClock(start + 600, 1)
    async with Engine(client, environ=environ, clock=later) as engine:
        await asyncio.sleep(2.0)
        found = await ticks(engine, cron)

    twelve_o_one = int((start + 30) * 1000)
    assert found == [twelve_o_one]
