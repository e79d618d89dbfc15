"""Cancel on event (`cancel=[Cancel(...)]`): a matching event cancels the run whatever it is
doing, and only the runs it matches, on every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import tideflow
from tideflow.testing import Engine, EngineFactory

TIMEOUT_S = 20.0
STOP = tideflow.Cancel(event="t/stop", if_exp="event.data.id == async.data.id")


async def until(check: Any, what: str, timeout_s: float = TIMEOUT_S) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never: {what}")


async def until_step(engine: Engine, run_id: str, step: str, status: str = "Waiting") -> None:
    async def seen() -> bool:
        steps = await engine.steps(run_id)
        return any(s["name"] == step and s["status"] == status for s in steps)

    await until(seen, f"step {step} of {run_id} {status}")


async def start(engine: Engine, data: dict[str, Any]) -> str:
    (event_id,) = await engine.send({"name": "t/go", "data": data})
    (run,) = await engine.wait_for_runs(event_id, timeout_s=TIMEOUT_S)
    run_id: str = run["run_id"]
    return run_id


async def cancelled_notices(engine: Engine) -> list[str]:
    response = await engine.http.get("/v1/events", params={"name": "tideflow/function.cancelled"})
    return [notice["data"]["run_id"] for notice in response.json()["data"]]


def assert_cancelled_by_event(run: dict[str, Any]) -> None:
    assert run["status"] == "Cancelled"
    assert run["error"]["name"] == "Cancelled"
    assert "by event t/stop" in run["error"]["message"]
    assert "(event)" in run["error"]["message"]
    assert run["output"] is None


async def test_an_event_cancels_a_sleeping_run_once_without_on_failure(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    failures: list[Any] = []

    async def on_failure(ctx: tideflow.Context) -> None:
        failures.append(ctx.event.data)

    @client.create_function(
        fn_id="sleeper",
        trigger=tideflow.TriggerEvent(event="t/go"),
        cancel=[STOP],
        on_failure=on_failure,
    )
    async def sleeper(ctx: tideflow.Context) -> str:
        await ctx.step.sleep("nap", "30s")
        return "woke"

    async with engine_for(client) as engine:
        run_id = await start(engine, {"id": 1})
        await until_step(engine, run_id, "nap")
        await engine.send({"name": "t/stop", "data": {"id": 1}})
        ended = await engine.wait_for_run(run_id, timeout_s=TIMEOUT_S)
        # A second matching event finds the run ended: no second notice.
        await engine.send({"name": "t/stop", "data": {"id": 1}})
        await asyncio.sleep(0.5)
        notices = await cancelled_notices(engine)
        steps = await engine.steps(run_id)

    assert_cancelled_by_event(ended)
    assert notices == [run_id]
    assert failures == []
    assert [(s["name"], s["status"]) for s in steps] == [("nap", "Waiting")]


async def test_an_event_cancels_a_run_waiting_for_an_event(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="waiter", trigger=tideflow.TriggerEvent(event="t/go"), cancel=[STOP]
    )
    async def waiter(ctx: tideflow.Context) -> Any:
        return await ctx.step.wait_for_event(
            "paid",
            event="t/paid",
            if_exp="event.data.id == async.data.id",
            timeout="30s",
        )

    async with engine_for(client) as engine:
        run_id = await start(engine, {"id": 5})
        await until_step(engine, run_id, "paid")
        await engine.send({"name": "t/stop", "data": {"id": 5}})
        ended = await engine.wait_for_run(run_id, timeout_s=TIMEOUT_S)
        # Its wait went with it: the awaited event resolves nothing now.
        await engine.send({"name": "t/paid", "data": {"id": 5}})
        await asyncio.sleep(0.3)
        after = await engine.run(run_id)

    assert_cancelled_by_event(ended)
    assert_cancelled_by_event(after)


async def test_an_event_mid_step_drops_the_steps_result_and_starts_no_next_step(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    ran: list[str] = []

    async def slow() -> str:
        ran.append("first started")
        await asyncio.sleep(1.5)
        ran.append("first ended")
        return "first"

    async def second() -> str:
        ran.append("second")
        return "second"

    @client.create_function(
        fn_id="stepper", trigger=tideflow.TriggerEvent(event="t/go"), cancel=[STOP]
    )
    async def stepper(ctx: tideflow.Context) -> list[str]:
        return [await ctx.step.run("first", slow), await ctx.step.run("second", second)]

    async with engine_for(client) as engine:
        run_id = await start(engine, {"id": 9})

        async def first_started() -> bool:
            return "first started" in ran

        await until(first_started, "the first step's body started")
        await engine.send({"name": "t/stop", "data": {"id": 9}})
        ended = await engine.wait_for_run(run_id, timeout_s=TIMEOUT_S)

        async def first_ended() -> bool:
            return "first ended" in ran

        await until(first_ended, "the first step's body ended")
        await asyncio.sleep(1.0)
        after = await engine.run(run_id)
        steps = await engine.steps(run_id)

    assert_cancelled_by_event(ended)
    assert_cancelled_by_event(after)
    assert ran == ["first started", "first ended"]
    assert [s for s in steps if s["status"] == "Completed"] == []


async def test_an_event_cancels_a_run_pending_admission(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    bodies: list[int] = []

    async def body(n: int) -> int:
        bodies.append(n)
        await asyncio.sleep(1.5 if n == 1 else 0)
        return n

    @client.create_function(
        fn_id="one_at_a_time",
        trigger=tideflow.TriggerEvent(event="t/go"),
        concurrency=1,
        cancel=[STOP],
    )
    async def one_at_a_time(ctx: tideflow.Context) -> int:
        done: int = await ctx.step.run("work", body, ctx.event.data["id"])
        return done

    async with engine_for(client) as engine:
        first = await start(engine, {"id": 1})

        async def first_running() -> bool:
            return bodies == [1]

        await until(first_running, "the first run's step executing")
        second = await start(engine, {"id": 2})
        await engine.send({"name": "t/stop", "data": {"id": 2}})
        second_ended = await engine.wait_for_run(second, timeout_s=TIMEOUT_S)
        first_ended = await engine.wait_for_run(first, timeout_s=TIMEOUT_S)
        third = await start(engine, {"id": 3})
        third_ended = await engine.wait_for_run(third, timeout_s=TIMEOUT_S)

    assert_cancelled_by_event(second_ended)
    assert (first_ended["status"], first_ended["output"]) == ("Completed", 1)
    # The cancelled run released its place: the next run is admitted, and 2 never ran.
    assert (third_ended["status"], third_ended["output"]) == ("Completed", 3)
    assert bodies == [1, 3]


def define_napper(client: tideflow.Client, *cancel: tideflow.Cancel, nap: str = "1s") -> None:
    @client.create_function(
        fn_id="napper", trigger=tideflow.TriggerEvent(event="t/go"), cancel=list(cancel)
    )
    async def napper(ctx: tideflow.Context) -> Any:
        await ctx.step.sleep("nap", ctx.event.data.get("nap", nap))
        return ctx.event.data["id"]


async def test_an_event_for_another_key_leaves_the_run_alone(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_napper(client, STOP, nap="2s")
    async with engine_for(client) as engine:
        kept = await start(engine, {"id": "a"})
        stopped = await start(engine, {"id": "b"})
        await until_step(engine, kept, "nap")
        await until_step(engine, stopped, "nap")
        # Same value, another type: CEL's == is typed, so this matches neither run.
        await engine.send({"name": "t/stop", "data": {"id": "c"}})
        await engine.send({"name": "t/stop", "data": {"id": "b"}})
        stopped_ended = await engine.wait_for_run(stopped, timeout_s=TIMEOUT_S)
        kept_ended = await engine.wait_for_run(kept, timeout_s=TIMEOUT_S)
        notices = await cancelled_notices(engine)

    assert_cancelled_by_event(stopped_ended)
    assert (kept_ended["status"], kept_ended["output"]) == ("Completed", "a")
    assert notices == [stopped]


async def test_a_listener_stops_listening_after_its_timeout(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_napper(
        client,
        tideflow.Cancel(event="t/stop", if_exp="event.data.id == async.data.id", timeout="1s"),
        nap="2500ms",
    )
    async with engine_for(client) as engine:
        late = await start(engine, {"id": 1})
        await asyncio.sleep(1.3)
        await engine.send({"name": "t/stop", "data": {"id": 1}})
        early = await start(engine, {"id": 2})
        await until_step(engine, early, "nap")
        await engine.send({"name": "t/stop", "data": {"id": 2}})
        late_ended = await engine.wait_for_run(late, timeout_s=TIMEOUT_S)
        early_ended = await engine.wait_for_run(early, timeout_s=TIMEOUT_S)

    assert (late_ended["status"], late_ended["output"]) == ("Completed", 1)
    assert_cancelled_by_event(early_ended)


async def test_if_exp_sees_the_trigger_as_event_and_the_incoming_event_as_async(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    # Not an equality: evaluated over every listener of the name, and a listener without
    # if_exp is cancelled by any event of its name.
    define_napper(
        client,
        tideflow.Cancel(event="t/stop", if_exp="async.data.level > event.data.threshold"),
        tideflow.Cancel(event="t/halt"),
        nap="2s",
    )
    async with engine_for(client) as engine:
        low = await start(engine, {"id": "low", "threshold": 1})
        high = await start(engine, {"id": "high", "threshold": 5})
        halted = await start(engine, {"id": "halted", "threshold": 100, "nap": "30s"})
        for run_id in (low, high, halted):
            await until_step(engine, run_id, "nap")
        await engine.send({"name": "t/stop", "data": {"level": 3}})
        low_ended = await engine.wait_for_run(low, timeout_s=TIMEOUT_S)
        high_ended = await engine.wait_for_run(high, timeout_s=TIMEOUT_S)
        await engine.send({"name": "t/halt", "data": {}})
        halted_ended = await engine.wait_for_run(halted, timeout_s=TIMEOUT_S)

    assert_cancelled_by_event(low_ended)
    assert halted_ended["status"] == "Cancelled"
    assert "by event t/halt" in halted_ended["error"]["message"]
    assert (high_ended["status"], high_ended["output"]) == ("Completed", "high")


async def test_an_event_cancels_a_run_held_by_throttle_and_one_waiting_for_a_signal(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    started: list[int] = []

    @client.create_function(
        fn_id="throttled",
        trigger=tideflow.TriggerEvent(event="t/go"),
        throttle=tideflow.Throttle(limit=1, period="30s"),
        cancel=[STOP],
    )
    async def throttled(ctx: tideflow.Context) -> Any:
        started.append(ctx.event.data["id"])
        return await ctx.step.wait_for_signal(
            "approved", signal=f"approve-{ctx.event.data['id']}", timeout="30s"
        )

    async with engine_for(client) as engine:
        signalled = await start(engine, {"id": 1})
        await until_step(engine, signalled, "approved")
        # The throttle holds this one for 30 s: it is Queued, with no step.
        held = await start(engine, {"id": 2})
        await engine.send({"name": "t/stop", "data": {"id": 2}})
        held_ended = await engine.wait_for_run(held, timeout_s=TIMEOUT_S)
        await engine.send({"name": "t/stop", "data": {"id": 1}})
        signalled_ended = await engine.wait_for_run(signalled, timeout_s=TIMEOUT_S)
        steps = await engine.steps(held)

    assert_cancelled_by_event(held_ended)
    assert_cancelled_by_event(signalled_ended)
    assert started == [1]
    assert steps == []


async def test_another_runs_finish_event_cancels_the_run(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    # No function triggers on tideflow/function.finished: the engine stores such events
    # processed, unless a run waits or listens for one, as here.
    define_napper(
        client,
        tideflow.Cancel(
            event="tideflow/function.finished",
            if_exp="event.data.id == async.data.event.data.id",
        ),
        nap="30s",
    )

    @client.create_function(fn_id="other", trigger=tideflow.TriggerEvent(event="t/other"))
    async def other(ctx: tideflow.Context) -> int:
        done: int = ctx.event.data["id"]
        return done

    async with engine_for(client) as engine:
        run_id = await start(engine, {"id": 3})
        await until_step(engine, run_id, "nap")
        await engine.finish({"name": "t/other", "data": {"id": 4}})
        await engine.finish({"name": "t/other", "data": {"id": 3}})
        ended = await engine.wait_for_run(run_id, timeout_s=TIMEOUT_S)

    assert ended["status"] == "Cancelled"
    assert "by event tideflow/function.finished (event)" in ended["error"]["message"]
