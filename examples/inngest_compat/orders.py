"""Steps, sleep, wait_for_event, send_event and errors, written for the `inngest` package."""

from __future__ import annotations

import datetime

# tideflow: import tideflow as inngest
import inngest

# tideflow: client = inngest.Client(app_id="compat-orders")
client = inngest.Inngest(app_id="compat-orders", is_production=False)


def reserve_stock(items: list[str]) -> dict[str, object]:
    if not items:
        raise inngest.NonRetriableError("an order needs items")
    return {"reserved": len(items)}


@client.create_function(
    fn_id="fulfil-order",
    trigger=inngest.TriggerEvent(event="shop/order.placed"),
    retries=2,
)
async def fulfil_order(ctx: inngest.Context) -> dict[str, object]:
    ctx.logger.info("fulfilling order %s", ctx.event.data["order_id"])
    try:
        stock = await ctx.step.run("reserve-stock", reserve_stock, ctx.event.data["items"])
    except inngest.StepError as err:
        return {"status": "rejected", "reason": err.message}
    await ctx.step.sleep("cool-off", datetime.timedelta(milliseconds=50))
    paid = await ctx.step.wait_for_event(
        "wait-payment",
        event="shop/order.paid",
        if_exp="event.data.order_id == async.data.order_id",
        timeout=datetime.timedelta(seconds=30),
    )
    if paid is None:
        return {"status": "unpaid"}
    await ctx.step.send_event(
        "announce",
        [inngest.Event(name="shop/order.fulfilled", data={"order_id": ctx.event.data["order_id"]})],
    )
    return {"status": "fulfilled", "stock": stock, "amount": paid.data["amount"]}
