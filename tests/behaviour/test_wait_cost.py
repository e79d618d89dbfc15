"""An expensive wait expression fails its run at once, at the step call that would register the
wait (no attempts are spent on it); the bulk cancellation API refuses one with a 400."""

from __future__ import annotations

import tideflow
from tideflow.testing import Engine


async def test_an_expensive_wait_if_exp_fails_the_run_at_once_naming_the_step(
    client: tideflow.Client,
) -> None:
    @client.create_function(fn_id="waits", trigger=tideflow.TriggerEvent(event="t/wait"))
    async def waits(ctx: tideflow.Context) -> object:
        try:
            return await ctx.step.wait_for_event(
                "approval",
                event="t/approved",
                if_exp="async.data.ids.exists(i, i == event.data.id)",
                timeout="1h",
            )
        except Exception:  # noqa: BLE001 - the refusal must get past the user's handler
            return "swallowed"

    @client.create_function(fn_id="cheap", trigger=tideflow.TriggerEvent(event="t/cheap"))
    async def cheap(ctx: tideflow.Context) -> object:
        return await ctx.step.wait_for_event(
            "approval", event="t/approved", if_exp="async.data.id == event.data.id", timeout="1s"
        )

    async with Engine(client) as engine:
        refused = await engine.finish({"name": "t/wait", "data": {"id": 1}})
        accepted = await engine.finish({"name": "t/cheap", "data": {"id": 1}})
        bulk = await engine.http.post(
            "/v1/cancellations",
            json={
                "function_id": "test-waits",
                "started_after": "2026-01-01T00:00:00Z",
                "started_before": "2026-01-02T00:00:00Z",
                "if_exp": 'event.data.name.matches("(a+)+$")',
            },
        )

    assert refused.run["status"] == "Failed"
    assert refused.run["error"]["name"] == "ExpressionError"
    assert (
        "step 'approval': a matching expression may not call exists"
        in (refused.run["error"]["message"])
    )
    assert refused.steps == []
    assert accepted.run["status"] == "Completed"
    assert bulk.status_code == 400
    assert "may not call matches" in bulk.json()["error"]
