"""The app the monitoring tests load: steps, a sleep, a retry, a failure, a wait, and flow
control (a concurrency limit, a rate limit, a throttle, a debounce and a batch)."""

from __future__ import annotations

APP = """
import os, time
import tideflow

client = tideflow.Client(app_id="load")


def flaky(run_id):
    # Fails its first attempt, so the run retries once.
    marker = f"{run_id}.tried"
    if not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError("first attempt fails")
    return "ok"


@client.create_function(fn_id="order", trigger=tideflow.TriggerEvent(event="load/order"), retries=2)
def order(ctx):
    total = ctx.step.run("price", lambda: ctx.event.data["n"] * 2)
    ctx.step.run("pack", time.sleep, 0.3)
    ctx.step.sleep("settle", "200ms")
    if ctx.event.data.get("wait"):
        ctx.step.wait_for_event("poke", event="load/poke", timeout="60s")
    if ctx.event.data.get("flaky"):
        ctx.step.run("flaky", flaky, ctx.run_id)
    return {"total": total}


@client.create_function(fn_id="refund", trigger=tideflow.TriggerEvent(event="load/refund"), retries=0)
def refund(ctx):
    ctx.step.run("refuse", lambda: 1 / 0)


@client.create_function(fn_id="slot", trigger=tideflow.TriggerEvent(event="load/slot"), concurrency=1)
def slot(ctx):
    ctx.step.run("hold", time.sleep, 0.4)


@client.create_function(
    fn_id="limited",
    trigger=tideflow.TriggerEvent(event="load/flow"),
    rate_limit=tideflow.RateLimit(limit=1, period="60s"),
)
def limited(ctx):
    return ctx.event.data["n"]


@client.create_function(
    fn_id="throttled",
    trigger=tideflow.TriggerEvent(event="load/flow"),
    throttle=tideflow.Throttle(limit=1, period="1s"),
)
def throttled(ctx):
    return ctx.event.data["n"]


@client.create_function(
    fn_id="debounced",
    trigger=tideflow.TriggerEvent(event="load/flow"),
    debounce=tideflow.Debounce(period="1s"),
)
def debounced(ctx):
    return ctx.event.data["n"]


@client.create_function(
    fn_id="batched",
    trigger=tideflow.TriggerEvent(event="load/flow"),
    batch_events=tideflow.Batch(max_size=3, timeout="1s"),
)
def batched(ctx):
    return [event.data["n"] for event in ctx.events]
"""
