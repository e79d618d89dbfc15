from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest
import tideflow
from tideflow.testing import StepCall, TestEngine

client = tideflow.Client(app_id="shop")


def load_user(user_id: int) -> dict[str, Any]:
    raise AssertionError("the real loader must not run in these tests")


@client.create_function(fn_id="welcome", trigger=tideflow.TriggerEvent(event="shop/user.created"))
async def welcome(ctx: tideflow.Context) -> dict[str, Any]:
    user = await ctx.step.run("load-user", load_user, ctx.event.data["user_id"])
    await ctx.step.sleep("wait-a-bit", datetime.timedelta(days=3))
    done = await ctx.step.wait_for_event(
        "wait-onboarding", event="shop/onboarding.done", timeout="3d"
    )
    score = await ctx.step.invoke_by_id("score", function_id="scorer", data={"id": user["id"]})
    ids = await ctx.step.send_event("announce", {"name": "shop/welcomed", "data": {"id": 1}})
    return {"user": user["name"], "onboarded": done is not None, "score": score, "sent": len(ids)}


async def test_mocked_steps_and_invokes_run_to_the_end_without_waiting() -> None:
    t = TestEngine(welcome)

    outcome = await t.execute(
        events=[{"name": "shop/user.created", "data": {"user_id": 7}}],
        steps={"load-user": lambda user_id: {"id": user_id, "name": "Ada"}},
        invokes={"scorer": lambda data: data["id"] * 10},
    )

    assert outcome.error is None
    assert outcome.result == {"user": "Ada", "onboarded": False, "score": 70, "sent": 1}
    assert [(call.id, call.op) for call in outcome.calls] == [
        ("load-user", "run"),
        ("wait-a-bit", "sleep"),
        ("wait-onboarding", "wait_for_event"),
        ("score", "invoke"),
        ("announce", "send_event"),
    ]
    assert outcome.calls[0] == StepCall("load-user", "run", (7,))
    assert outcome.state["load-user"] == {"id": 7, "name": "Ada"}
    assert outcome.state["wait-a-bit"] is None
    assert len(outcome.state["announce"]) == 1


async def test_a_mocked_wait_returns_the_event() -> None:
    outcome = await TestEngine(welcome).execute(
        events=[{"name": "shop/user.created", "data": {"user_id": 1}}],
        steps={
            "load-user": {"id": 1, "name": "Bo"},
            "wait-onboarding": {"name": "shop/onboarding.done", "data": {"user_id": 1}},
        },
        invokes={"shop-scorer": 5},
    )

    assert outcome.result["onboarded"] is True
    assert outcome.state["wait-onboarding"]["data"] == {"user_id": 1}


async def test_execute_step_stops_after_that_step() -> None:
    outcome = await TestEngine(welcome).execute_step(
        "wait-a-bit",
        events=[{"name": "shop/user.created", "data": {"user_id": 1}}],
        steps={"load-user": {"id": 1, "name": "Bo"}},
    )

    assert [call.id for call in outcome.calls] == ["load-user", "wait-a-bit"]
    assert outcome.result is None
    assert outcome.state == {"load-user": {"id": 1, "name": "Bo"}, "wait-a-bit": None}


async def test_an_unmocked_invoke_is_a_clear_error() -> None:
    with pytest.raises(tideflow.TideflowError, match="invoke of 'shop-scorer' has no mock"):
        await TestEngine(welcome).execute(
            events=[{"name": "shop/user.created", "data": {"user_id": 1}}],
            steps={"load-user": {"id": 1, "name": "Bo"}},
        )


retrying = tideflow.Client(app_id="retry")


@retrying.create_function(fn_id="flaky", trigger=tideflow.TriggerEvent(event="t/go"), retries=2)
async def flaky(ctx: tideflow.Context) -> str:
    attempts: list[int] = []

    def body() -> str:
        attempts.append(ctx.attempt)
        raise ValueError(f"attempt {ctx.attempt}")

    try:
        await ctx.step.run("always-fails", body)
    except tideflow.StepError as exc:
        return f"gave up: {exc.message}"
    return "unreachable"


async def test_a_failing_step_is_retried_then_raises_step_error_in_the_handler() -> None:
    outcome = await TestEngine(flaky).execute()

    assert outcome.result == "gave up: attempt 2"
    assert [call.id for call in outcome.calls] == ["always-fails"] * 3
    assert "always-fails" not in outcome.state


@retrying.create_function(fn_id="loop", trigger=tideflow.TriggerEvent(event="t/loop"))
def loop(ctx: tideflow.SyncContext) -> int:
    total = 0
    for index in range(3):
        total += ctx.step.run("add", lambda i=index: i + 1)
    if total > 5:
        raise tideflow.NonRetriableError("too big")
    return total


def test_the_sync_form_works_in_plain_tests_with_repeated_step_ids() -> None:
    outcome = TestEngine(loop).execute_sync(steps={"add:2": 10})

    assert outcome.state == {"add": 1, "add:1": 2, "add:2": 10}
    assert isinstance(outcome.error, tideflow.NonRetriableError)
    assert outcome.result is None
    assert TestEngine(loop).execute_step_sync("add:1").result == 2


def test_it_works_under_plain_asyncio() -> None:
    outcome = asyncio.run(TestEngine(loop).execute(steps={"add": 0, "add:1": 0, "add:2": 0}))

    assert outcome.result == 0
