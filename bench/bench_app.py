"""The tideflow app the benchmark's worker runs: `tideflow worker bench_app:client`."""

from __future__ import annotations

import datetime
import os

import tideflow

# `bench/run.py --tideflow-buffered-steps N`: how many finished steps a worker buffers per write.
BUFFERED_STEPS_VARIABLE = "BENCH_BUFFERED_STEPS"
_buffered = int(os.environ.get(BUFFERED_STEPS_VARIABLE) or 1)

client = tideflow.Client(
    app_id="bench", checkpointing=tideflow.Checkpointing(buffered_steps=_buffered)
)

ONE_EVENT = "bench/one"
TEN_EVENT = "bench/ten"
KEYED_EVENT = "bench/keyed"
LIMITED_EVENT = "bench/limited"
DEBOUNCE_EVENT = "bench/debounce"
SLEEP_EVENT = "bench/sleep"
BURST = 10
"""Events a debounce run's burst has (all sent at once)."""
KEYS = 1000
"""Distinct concurrency keys the keyed workload's events spread over."""


def noop() -> None:
    return None


@client.create_function(fn_id="one", trigger=tideflow.TriggerEvent(event=ONE_EVENT))
async def one(ctx: tideflow.Context) -> int:
    await ctx.step.run("s0", noop)
    return 1


@client.create_function(fn_id="ten", trigger=tideflow.TriggerEvent(event=TEN_EVENT))
async def ten(ctx: tideflow.Context) -> int:
    for i in range(10):
        await ctx.step.run(f"s{i}", noop)
    return 10


@client.create_function(
    fn_id="keyed",
    trigger=tideflow.TriggerEvent(event=KEYED_EVENT),
    concurrency=[tideflow.Concurrency(limit=1, key="event.data.key")],
)
async def keyed(ctx: tideflow.Context) -> int:
    await ctx.step.run("s0", noop)
    return 1


@client.create_function(
    fn_id="limited",
    trigger=tideflow.TriggerEvent(event=LIMITED_EVENT),
    concurrency=10,
    # Loose enough not to bind at this machine's rates: the row measures what the rule costs.
    throttle=tideflow.Throttle(limit=5000, period="1s", burst=100),
)
async def limited(ctx: tideflow.Context) -> int:
    await ctx.step.run("s0", noop)
    return 1


@client.create_function(
    fn_id="debounce",
    trigger=tideflow.TriggerEvent(event=DEBOUNCE_EVENT),
    debounce=tideflow.Debounce(period="1s", key="event.data.key"),
)
async def debounce(ctx: tideflow.Context) -> int:
    await ctx.step.run("s0", noop)
    return 1


@client.create_function(fn_id="sleeper", trigger=tideflow.TriggerEvent(event=SLEEP_EVENT))
async def sleeper(ctx: tideflow.Context) -> int:
    # `bench/sleepers.py`: asleep until its own wake time, then one step.
    wake = datetime.datetime.fromtimestamp(ctx.event.data["wake_ms"] / 1000, tz=datetime.UTC)
    await ctx.step.sleep_until("nap", wake)
    await ctx.step.run("woke", noop)
    return 1
