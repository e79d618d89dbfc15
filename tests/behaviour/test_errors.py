from __future__ import annotations

from typing import Any

import tideflow
from tideflow.testing import EngineFactory


async def test_a_failing_step_is_retried_with_its_attempt_counted(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    attempts: list[int] = []
    outside: list[int] = []

    @client.create_function(
        fn_id="flaky", trigger=tideflow.TriggerEvent(event="t/flaky"), retries=3
    )
    async def flaky(ctx: tideflow.Context) -> int:
        def body() -> int:
            attempts.append(ctx.attempt)
            if ctx.attempt < 2:
                raise ConnectionError(f"attempt {ctx.attempt} failed")
            return ctx.attempt

        outside.append(ctx.attempt)
        value: int = await ctx.step.run("call", body)
        return value

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/flaky"})

    assert (result.status, result.output) == ("Completed", 2)
    assert attempts == [0, 1, 2]
    # The pass that returns, right after the step succeeded in the same job, sees its attempt too.
    assert outside == [0, 1, 2, 2]
    (step,) = result.steps
    assert (step["status"], step["attempt"], step["output"]) == ("Completed", 2, 2)


async def test_steps_count_their_retries_independently(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    failures = {"a": 1, "b": 1}

    def fail_once(name: str) -> str:
        if failures[name]:
            failures[name] -= 1
            raise RuntimeError(name)
        return name

    @client.create_function(fn_id="two", trigger=tideflow.TriggerEvent(event="t/two"), retries=1)
    async def two(ctx: tideflow.Context) -> list[str]:
        return [await ctx.step.run("a", fail_once, "a"), await ctx.step.run("b", fail_once, "b")]

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/two"})

    assert (result.status, result.output) == ("Completed", ["a", "b"])
    assert [s["attempt"] for s in result.steps] == [1, 1]


async def test_a_step_out_of_attempts_raises_step_error_that_a_fallback_can_catch(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    calls: list[str] = []

    def always_fails() -> None:
        calls.append("primary")
        raise TimeoutError("provider down")

    @client.create_function(
        fn_id="fallback", trigger=tideflow.TriggerEvent(event="t/fallback"), retries=2
    )
    async def fallback(ctx: tideflow.Context) -> dict[str, Any]:
        try:
            await ctx.step.run("primary", always_fails)
        except tideflow.StepError as exc:
            backup = await ctx.step.run("backup", lambda: "from backup")
            return {
                "error": [exc.name, exc.message],
                "stack": "TimeoutError" in (exc.stack or ""),
                "value": backup,
            }
        return {}

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/fallback"})

    assert result.output == {
        "error": ["TimeoutError", "provider down"],
        "stack": True,
        "value": "from backup",
    }
    assert calls == ["primary"] * 3
    primary = result.steps[0]
    assert (primary["status"], primary["attempt"], primary["error"]["message"]) == (
        "Failed",
        2,
        "provider down",
    )


async def test_an_uncaught_step_error_fails_the_run_with_its_error(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="doomed", trigger=tideflow.TriggerEvent(event="t/doomed"), retries=1
    )
    async def doomed(ctx: tideflow.Context) -> None:
        await ctx.step.run("explode", lambda: 1 / 0)

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/doomed"})

    assert result.status == "Failed"
    assert result.run["error"]["name"] == "ZeroDivisionError"
    assert result.run["error"]["message"] == "division by zero"
    assert "ZeroDivisionError" in result.run["error"]["stack"]


async def test_non_retriable_error_stops_at_once(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    calls: list[int] = []

    def refuse() -> None:
        calls.append(1)
        raise tideflow.NonRetriableError("card declined")

    @client.create_function(
        fn_id="strict", trigger=tideflow.TriggerEvent(event="t/strict"), retries=5
    )
    async def strict(ctx: tideflow.Context) -> None:
        await ctx.step.run("charge", refuse)

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/strict"})

    assert result.status == "Failed"
    assert result.run["error"]["name"] == "NonRetriableError"
    assert result.run["error"]["message"] == "card declined"
    assert calls == [1]


async def test_errors_outside_steps_retry_the_run_then_fail_it(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    passes: list[int] = []

    @client.create_function(
        fn_id="outside", trigger=tideflow.TriggerEvent(event="t/outside"), retries=2
    )
    async def outside(ctx: tideflow.Context) -> None:
        passes.append(ctx.attempt)
        raise KeyError("missing")

    @client.create_function(
        fn_id="outside-strict", trigger=tideflow.TriggerEvent(event="t/outside-strict")
    )
    async def outside_strict(ctx: tideflow.Context) -> None:
        passes.append(-1)
        raise tideflow.NonRetriableError("no point")

    async with engine_for(client) as engine:
        retried = await engine.finish({"name": "t/outside"})
        strict = await engine.finish({"name": "t/outside-strict"})

    assert retried.status == "Failed"
    assert retried.run["error"]["name"] == "KeyError"
    assert strict.status == "Failed"
    assert strict.run["error"]["message"] == "no point"
    assert passes == [0, 1, 2, -1]


async def test_retry_after_error_sets_the_delay(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    import time

    seen: list[float] = []

    def later() -> str:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise tideflow.RetryAfterError("rate limited", "500ms")
        return "ok"

    @client.create_function(fn_id="later", trigger=tideflow.TriggerEvent(event="t/later"))
    async def later_fn(ctx: tideflow.Context) -> str:
        value: str = await ctx.step.run("call", later)
        return value

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/later"})

    assert result.output == "ok"
    assert seen[1] - seen[0] >= 0.45


async def test_on_failure_runs_once_with_the_failed_event(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    failures: list[dict[str, Any]] = []

    async def handle_failure(ctx: tideflow.Context) -> None:
        failures.append({"name": ctx.event.name, **ctx.event.data})

    @client.create_function(
        fn_id="fragile",
        trigger=tideflow.TriggerEvent(event="t/fragile"),
        retries=1,
        on_failure=handle_failure,
    )
    async def fragile(ctx: tideflow.Context) -> None:
        await ctx.step.run("break", lambda: [][1])

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/fragile", "data": {"order": 3}})
        failed_events = []
        for _ in range(200):
            failed_events = (
                await engine.http.get("/v1/events", params={"name": "tideflow/function.failed"})
            ).json()["data"]
            if failed_events and failures:
                break
            import asyncio

            await asyncio.sleep(0.02)
        (failure_run,) = await engine.wait_for_runs(failed_events[0]["internal_id"])
        await engine.wait_for_run(failure_run["run_id"])

    assert result.status == "Failed"
    assert len(failures) == 1
    failure = failures[0]
    assert failure["name"] == "tideflow/function.failed"
    assert failure["function_id"] == "test-fragile"
    assert failure["run_id"] == result.run["run_id"]
    assert failure["error"]["name"] == "IndexError"
    assert failure["event"]["data"] == {"order": 3}
    assert failure_run["function_id"] == "test-fragile-failure"


async def test_finished_runs_emit_system_events_other_functions_trigger_on(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="worker", trigger=tideflow.TriggerEvent(event="t/work"))
    async def work(ctx: tideflow.Context) -> int:
        return 42

    @client.create_function(
        fn_id="audit",
        trigger=tideflow.TriggerEvent(
            event="tideflow/function.finished", expression="event.data.function_id == 'test-worker'"
        ),
    )
    async def audit(ctx: tideflow.Context) -> Any:
        return {"result": ctx.event.data["result"], "run": ctx.event.data["run_id"]}

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/work"})
        import asyncio

        for _ in range(300):
            events = (
                await engine.http.get("/v1/events", params={"name": "tideflow/function.finished"})
            ).json()["data"]
            audited = [e for e in events if e["data"]["function_id"] == "test-worker"]
            if audited:
                break
            await asyncio.sleep(0.02)
        (audit_run,) = await engine.wait_for_runs(audited[0]["internal_id"])
        audit_run = await engine.wait_for_run(audit_run["run_id"])

    assert audit_run["output"] == {"result": 42, "run": result.run["run_id"]}
