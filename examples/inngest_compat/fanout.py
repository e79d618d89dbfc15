"""invoke, parallel steps, a plain (sync) handler and RetryAfterError, written for `inngest`."""

from __future__ import annotations

# tideflow: import tideflow as inngest
import inngest

# tideflow: client = inngest.Client(app_id="compat-fanout")
client = inngest.Inngest(app_id="compat-fanout", is_production=False)

_flaky_calls: list[int] = []


def price(sku: str) -> int:
    return {"apple": 3, "pear": 4, "plum": 5}[sku]


def flaky_rate() -> int:
    _flaky_calls.append(1)
    if len(_flaky_calls) == 1:
        raise inngest.RetryAfterError("rate service busy", 20)
    return 2


@client.create_function(
    fn_id="price-basket", trigger=inngest.TriggerEvent(event="shop/basket.priced")
)
def price_basket(ctx: inngest.ContextSync) -> int:
    skus = ctx.event.data["skus"]
    prices = ctx.group.parallel(
        tuple(lambda sku=sku: ctx.step.run(f"price-{sku}", price, sku) for sku in skus)
    )
    rate = ctx.step.run("rate", flaky_rate)
    return sum(prices) * rate


@client.create_function(fn_id="checkout", trigger=inngest.TriggerEvent(event="shop/checkout"))
async def checkout(ctx: inngest.Context) -> dict[str, object]:
    total = await ctx.step.invoke(
        "price", function=price_basket, data={"skus": ctx.event.data["skus"]}
    )
    return {"total": total, "attempt": ctx.attempt}
