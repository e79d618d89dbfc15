"""The cost rule for matching expressions (waits' and cancels' `if_exp`), and where it is
applied: at function definition for `Cancel`, at the step call for `wait_for_event`."""

from __future__ import annotations

import pytest
import tideflow
from tideflow import errors
from tideflow._core.expressions import check_match_cost

ACCEPTED = [
    "event.data.user_id == async.data.user_id",
    "size(async.data.items) > 2 && async.data.kind in ['a', 'b'] || async.data.n >= 3",
    "(((event.data.a == async.data.a)))",
]
REFUSED = {
    "async.data.items.exists(i, i > 2)": "may not call exists",
    "async.data.items.all(i, i.ok)": "may not call all",
    "async.data.items.map(i, i * 2).size() > 1": "may not call map",
    "async.data.items.filter(i, i > 1).size() > 1": "may not call filter",
    "async.data.items.exists_one(i, i == 2)": "may not call exists_one",
    'async.data.name.matches("(a+)+$")': "may not call matches",
    'matches(async.data.name, "(a+)+$")': "may not call matches",
    "((((((((((async.data.n))))))))))": "nests 11 levels deep; the limit is 8",
    "async.data.n == 1 || " * 60 + "true": "characters; the limit is 1000",
}


def test_the_rule_accepts_bounded_expressions_and_refuses_the_rest(figures: list[str]) -> None:
    for text in ACCEPTED:
        check_match_cost(text)
    for text, reason in REFUSED.items():
        with pytest.raises(errors.ExpressionError, match=reason):
            check_match_cost(text)
    figures.append(
        f"CEL cost rule: {len(ACCEPTED)} bounded expressions accepted, "
        f"{len(REFUSED)} expensive ones refused"
    )


def test_an_expensive_cancel_if_exp_is_refused_by_create_function_naming_it() -> None:
    client = tideflow.Client(app_id="shop")
    with pytest.raises(
        errors.ExpressionError, match=r"order: cancel\.if_exp: .*may not call exists"
    ):

        @client.create_function(
            fn_id="order",
            trigger=tideflow.TriggerEvent(event="shop/order"),
            cancel=[
                tideflow.Cancel(
                    event="shop/cancelled", if_exp="async.data.ids.exists(i, i == event.data.id)"
                )
            ],
        )
        async def order(ctx: tideflow.Context) -> None:
            return None
