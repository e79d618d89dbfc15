"""An example app: a welcome flow with steps, a sleep, a wait for another event, and a retry.

Run it with `tideflow dev examples.shop:client`, then send `shop/user.created`.
"""

from __future__ import annotations

import datetime
import random

import tideflow

client = tideflow.Client(app_id="shop")


def load_user(user_id: int) -> dict[str, object]:
    return {"id": user_id, "email": f"user{user_id}@example.com"}


def send_email(to: str, subject: str) -> dict[str, str]:
    # A flaky mail provider: the step's retries absorb it.
    if random.random() < 0.5:
        raise ConnectionError("mail provider timed out")
    return {"to": to, "subject": subject, "status": "sent"}


@client.create_function(
    fn_id="welcome",
    trigger=tideflow.TriggerEvent(event="shop/user.created"),
    retries=5,
)
async def welcome(ctx: tideflow.Context) -> dict[str, object]:
    user = await ctx.step.run("load-user", load_user, ctx.event.data["user_id"])
    await ctx.step.run("send-welcome", send_email, user["email"], "Welcome!")
    await ctx.step.sleep("let-them-look-around", datetime.timedelta(seconds=2))
    onboarded = await ctx.step.wait_for_event(
        "wait-onboarding",
        event="shop/onboarding.done",
        if_exp="event.data.user_id == async.data.user_id",
        timeout=datetime.timedelta(seconds=30),
    )
    if onboarded is None:
        await ctx.step.run("nudge", send_email, user["email"], "Need a hand?")
    return {"user": user["id"], "onboarded": onboarded is not None}


@client.create_function(
    fn_id="count-orders",
    trigger=tideflow.TriggerEvent(event="shop/order.placed", expression="event.data.total > 0"),
)
def count_orders(ctx: tideflow.Context) -> dict[str, object]:
    total = ctx.step.run("read-total", lambda: ctx.event.data["total"])
    return {"total": total}
