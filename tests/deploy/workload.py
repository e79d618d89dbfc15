"""The app the monitoring tests load: steps, a sleep, a retry, a failure, a wait."""

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
"""
