"""The app the soak's workers run (`tideflow worker soak_app:client`): one function per kind of
load, each run's end state fixed by its event's data (see bench/soak.py)."""

from __future__ import annotations

import tideflow

client = tideflow.Client(app_id="soak")


def double(n: int) -> int:
    return 2 * n


@client.create_function(fn_id="steps", trigger=tideflow.TriggerEvent(event="soak/steps"))
async def steps(ctx: tideflow.Context) -> int:
    total = 0
    for i in range(3):
        total += await ctx.step.run(f"s{i}", double, ctx.event.data["n"])
    return total


@client.create_function(fn_id="sleeper", trigger=tideflow.TriggerEvent(event="soak/sleep"))
async def sleeper(ctx: tideflow.Context) -> int:
    await ctx.step.sleep("nap", ctx.event.data["nap"])
    return int(await ctx.step.run("woke", double, ctx.event.data["n"]))


@client.create_function(fn_id="waiter", trigger=tideflow.TriggerEvent(event="soak/wait"))
async def waiter(ctx: tideflow.Context) -> bool:
    reply = await ctx.step.wait_for_event(
        "reply",
        event="soak/reply",
        if_exp="event.data.n == async.data.n",
        timeout=ctx.event.data["timeout"],
    )
    return reply is not None


def flaky(attempt: int, fail_always: bool) -> int:
    if fail_always or attempt < 2:
        raise RuntimeError(f"attempt {attempt} fails")
    return attempt


@client.create_function(fn_id="flaky", trigger=tideflow.TriggerEvent(event="soak/flaky"), retries=3)
async def retried(ctx: tideflow.Context) -> int:
    return int(await ctx.step.run("flaky", flaky, ctx.attempt, ctx.event.data["fail_always"]))


@client.create_function(
    fn_id="cancellable",
    trigger=tideflow.TriggerEvent(event="soak/cancellable"),
    cancel=[tideflow.Cancel(event="soak/cancel", if_exp="event.data.n == async.data.n")],
)
async def cancellable(ctx: tideflow.Context) -> None:
    await ctx.step.run("begin", double, ctx.event.data["n"])
    await ctx.step.sleep("long", "10m")


@client.create_function(
    fn_id="limited",
    trigger=tideflow.TriggerEvent(event="soak/limited"),
    concurrency=[tideflow.Concurrency(limit=2, key="event.data.k")],
    throttle=tideflow.Throttle(limit=20, period="1s", burst=5),
)
async def limited(ctx: tideflow.Context) -> int:
    return int(await ctx.step.run("s", double, ctx.event.data["n"]))


@client.create_function(
    fn_id="debounced",
    trigger=tideflow.TriggerEvent(event="soak/debounce"),
    debounce=tideflow.Debounce(period="1s", key="event.data.k"),
)
async def debounced(ctx: tideflow.Context) -> int:
    return int(await ctx.step.run("s", double, ctx.event.data["n"]))
