from __future__ import annotations

import asyncio
import datetime
from typing import Any

import tideflow
from tideflow.testing import EngineFactory


def define_waiter(client: tideflow.Client, timeout: str = "10s") -> None:
    @client.create_function(fn_id="waiter", trigger=tideflow.TriggerEvent(event="t/order.created"))
    async def waiter(ctx: tideflow.Context) -> Any:
        paid = await ctx.step.wait_for_event(
            "wait-paid",
            event="t/order.paid",
            if_exp="event.data.order == async.data.order",
            timeout=timeout,
        )
        return None if paid is None else {"name": paid.name, "data": paid.data}


async def wait_until_waiting(engine: Any, run_id: str, step: str) -> None:
    for _ in range(500):
        steps = await engine.steps(run_id)
        if any(s["name"] == step and s["status"] == "Waiting" for s in steps):
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"step {step} never waited")


async def test_wait_for_event_resumes_with_the_matching_event_only(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_waiter(client)
    async with engine_for(client) as engine:
        (event_id,) = await engine.send({"name": "t/order.created", "data": {"order": 1}})
        (run,) = await engine.wait_for_runs(event_id)
        await wait_until_waiting(engine, run["run_id"], "wait-paid")
        await engine.send({"name": "t/order.paid", "data": {"order": 2}})
        await engine.send({"name": "t/order.paid", "data": {"order": 1, "amount": 5}})
        ended = await engine.wait_for_run(run["run_id"])
        steps = await engine.steps(run["run_id"])

    assert ended["status"] == "Completed"
    assert ended["output"] == {"name": "t/order.paid", "data": {"order": 1, "amount": 5}}
    assert [(s["op"], s["status"]) for s in steps] == [("wait_for_event", "Completed")]


async def test_wait_for_event_returns_none_on_timeout(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_waiter(client, timeout="200ms")
    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/order.created", "data": {"order": 1}})

    assert (result.status, result.output) == ("Completed", None)


async def test_one_event_resolves_each_matching_wait_once(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_waiter(client)
    async with engine_for(client) as engine:
        runs = []
        for _ in range(3):
            (event_id,) = await engine.send({"name": "t/order.created", "data": {"order": 7}})
            runs.extend(await engine.wait_for_runs(event_id))
        for run in runs:
            await wait_until_waiting(engine, run["run_id"], "wait-paid")
        await engine.send({"name": "t/order.paid", "data": {"order": 7}})
        await engine.send({"name": "t/order.paid", "data": {"order": 7, "again": True}})
        ended = [await engine.wait_for_run(run["run_id"]) for run in runs]

    assert [run["output"]["data"] for run in ended] == [{"order": 7}] * 3


async def test_wait_for_signal_resumes_with_the_signal_data(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="approval", trigger=tideflow.TriggerEvent(event="t/approve"))
    async def approval(ctx: tideflow.Context) -> Any:
        return await ctx.step.wait_for_signal(
            "approved",
            signal=f"approval-{ctx.event.data['id']}",
            timeout=datetime.timedelta(seconds=10),
        )

    async with engine_for(client) as engine:
        unknown = await engine.http.post("/v1/signals", json={"signal": "approval-9", "data": 1})
        (event_id,) = await engine.send({"name": "t/approve", "data": {"id": 9}})
        (run,) = await engine.wait_for_runs(event_id)
        await wait_until_waiting(engine, run["run_id"], "approved")
        answer = await engine.http.post(
            "/v1/signals", json={"signal": "approval-9", "data": {"by": "bob"}}
        )
        ended = await engine.wait_for_run(run["run_id"])
        again = await engine.http.post("/v1/signals", json={"signal": "approval-9", "data": 2})

    assert unknown.status_code == 404
    assert "approval-9" in unknown.json()["error"]
    assert answer.json() == {"run_id": run["run_id"]}
    assert ended["output"] == {"by": "bob"}
    assert again.status_code == 404


async def test_wait_for_signal_times_out_with_none(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="approval", trigger=tideflow.TriggerEvent(event="t/approve"))
    async def approval(ctx: tideflow.Context) -> Any:
        return {"got": await ctx.step.wait_for_signal("approved", signal="never", timeout="150ms")}

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/approve"})

    assert result.output == {"got": None}


async def test_invoke_returns_the_invoked_functions_output(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="double", trigger=tideflow.TriggerEvent(event="t/never"))
    async def double(ctx: tideflow.Context) -> int:
        value: int = await ctx.step.run("double", lambda: ctx.event.data["n"] * 2)
        return value

    @client.create_function(fn_id="caller", trigger=tideflow.TriggerEvent(event="t/call"))
    async def caller(ctx: tideflow.Context) -> list[Any]:
        by_object = await ctx.step.invoke("by-object", function=double, data={"n": 2})
        by_id = await ctx.step.invoke_by_id("by-id", function_id="double", data={"n": 5})
        return [by_object, by_id]

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/call"})

    assert (result.status, result.output) == ("Completed", [4, 10])
    assert [(s["name"], s["op"], s["output"]) for s in result.steps] == [
        ("by-object", "invoke", 4),
        ("by-id", "invoke", 10),
    ]


async def test_invoking_a_failing_or_unknown_function_raises_step_error(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="broken", trigger=tideflow.TriggerEvent(event="t/never"), retries=0
    )
    async def broken(ctx: tideflow.Context) -> None:
        raise ValueError("child is broken")

    @client.create_function(fn_id="caller", trigger=tideflow.TriggerEvent(event="t/call"))
    async def caller(ctx: tideflow.Context) -> list[str]:
        caught = []
        for name in ("broken", "missing"):
            try:
                await ctx.step.invoke_by_id(f"call-{name}", function_id=name, data={})
            except tideflow.StepError as exc:
                caught.append(f"{exc.name}: {exc.message}")
        return caught

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/call"})

    assert result.status == "Completed", result.run["error"]
    assert result.output == [
        "ValueError: child is broken",
        "FunctionNotFoundError: no function 'test-missing' is registered",
    ]


async def test_invoke_times_out_with_step_error(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="slow", trigger=tideflow.TriggerEvent(event="t/never"))
    async def slow(ctx: tideflow.Context) -> None:
        await ctx.step.sleep("long", "10s")

    @client.create_function(fn_id="caller", trigger=tideflow.TriggerEvent(event="t/call"))
    async def caller(ctx: tideflow.Context) -> str:
        try:
            await ctx.step.invoke("call", function=slow, data={}, timeout="100ms")
        except tideflow.StepError as exc:
            return exc.name
        return "no error"

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/call"})

    assert result.output == "InvokeTimeoutError"
