"""Gates before a run starts: rate limit and idempotency drop events (kept and listed, with no
run), singleton skips or cancels; each on every backend."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import tideflow
from tideflow.testing import Engine, EngineFactory

TIMEOUT_S = 20.0


async def outcomes(engine: Engine, event_ids: list[str]) -> list[str]:
    """For each event, once it has been processed: "run", or why its run did not start."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        found = []
        for event_id in event_ids:
            if await engine.runs(event_id):
                found.append("run")
            else:
                refusals = await engine.store.run_refusals(event_id)
                found.append(next(iter(refusals.values()), "pending"))
        if "pending" not in found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def wait_until_waiting(engine: Engine, run_id: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not any(step["status"] == "Waiting" for step in await engine.steps(run_id)):
        assert time.monotonic() < deadline, f"run {run_id} never waited"
        await asyncio.sleep(0.02)


def define_counted(client: tideflow.Client, **options: Any) -> None:
    @client.create_function(fn_id="gated", trigger=tideflow.TriggerEvent(event="t/go"), **options)
    async def gated(ctx: tideflow.Context) -> Any:
        return ctx.event.data


def define_holder(client: tideflow.Client, mode: Literal["skip", "cancel"]) -> None:
    """Runs that wait for `t/release` while their event says `hold`, then return `n`."""

    @client.create_function(
        fn_id="single",
        trigger=tideflow.TriggerEvent(event="t/go"),
        singleton=tideflow.Singleton(key="event.data.user", mode=mode),
    )
    async def single(ctx: tideflow.Context) -> Any:
        if ctx.event.data.get("hold"):
            await ctx.step.wait_for_event(
                "hold",
                event="t/release",
                if_exp="event.data.n == async.data.n",
                timeout="1m",
            )
        return ctx.event.data["n"]


async def test_a_burst_over_the_rate_limit_starts_exactly_limit_runs_and_keeps_every_event(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_counted(client, rate_limit=tideflow.RateLimit(limit=3, period="60s"))
    async with engine_for(client) as engine:
        ids = await engine.send(*({"name": "t/go", "data": {"n": n}} for n in range(10)))
        found = await outcomes(engine, ids)
        listed = (await engine.http.get("/v1/events", params={"name": "t/go"})).json()["data"]

    assert found == ["run"] * 3 + ["rate_limited"] * 7
    assert sorted(event["internal_id"] for event in listed) == sorted(ids)


async def test_rate_limit_keys_are_counted_apart(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_counted(
        client, rate_limit=tideflow.RateLimit(limit=1, period="60s", key="event.data.user")
    )
    users = ["a", "a", "b", "c", "b", "a"]
    async with engine_for(client) as engine:
        ids = await engine.send(*({"name": "t/go", "data": {"user": user}} for user in users))
        found = await outcomes(engine, ids)

    assert found == ["run", "rate_limited", "run", "run", "rate_limited", "rate_limited"]


async def test_the_rate_limit_lets_runs_start_again_once_its_period_has_passed(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    # Two seconds: the burst is decided well within one emission interval (1 s) on any backend.
    define_counted(client, rate_limit=tideflow.RateLimit(limit=2, period="2s"))
    async with engine_for(client) as engine:
        burst = await engine.send(*({"name": "t/go", "data": {"n": n}} for n in range(4)))
        found = await outcomes(engine, burst)
        await asyncio.sleep(2.2)
        later = await engine.send(*({"name": "t/go", "data": {"n": n}} for n in range(4, 7)))
        found_later = await outcomes(engine, later)

    assert found == ["run", "run", "rate_limited", "rate_limited"]
    assert found_later == ["run", "run", "rate_limited"]


async def test_idempotency_starts_one_run_per_key(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_counted(client, idempotency="event.data.order")
    orders = [1, 1, 2, 1, 2, 3]
    async with engine_for(client) as engine:
        first = await engine.send(*({"name": "t/go", "data": {"order": o}} for o in orders[:3]))
        # A second request later: the key outlives the batch it was taken in.
        second = await engine.send(*({"name": "t/go", "data": {"order": o}} for o in orders[3:]))
        found = await outcomes(engine, first + second)
        outputs = [
            (await engine.wait_for_run((await engine.runs(event_id))[0]["run_id"]))["output"]
            for event_id, outcome in zip(first + second, found, strict=True)
            if outcome == "run"
        ]

    assert found == ["run", "idempotent", "run", "idempotent", "idempotent", "run"]
    assert outputs == [{"order": 1}, {"order": 2}, {"order": 3}]


async def test_singleton_skip_starts_no_run_while_the_keys_run_waits_and_one_after_it_ended(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_holder(client, "skip")
    async with engine_for(client) as engine:
        (first,) = await engine.send({"name": "t/go", "data": {"user": "a", "n": 1, "hold": 1}})
        (run,) = await engine.wait_for_runs(first)
        await wait_until_waiting(engine, run["run_id"])
        second, other = await engine.send(
            {"name": "t/go", "data": {"user": "a", "n": 2}},
            {"name": "t/go", "data": {"user": "b", "n": 3}},
        )
        while_waiting = await outcomes(engine, [second, other])
        await engine.send({"name": "t/release", "data": {"n": 1}})
        ended = await engine.wait_for_run(run["run_id"], timeout_s=TIMEOUT_S)
        (third,) = await engine.send({"name": "t/go", "data": {"user": "a", "n": 4}})
        (third_run,) = await engine.wait_for_runs(third, timeout_s=TIMEOUT_S)
        third_ended = await engine.wait_for_run(third_run["run_id"], timeout_s=TIMEOUT_S)

    assert while_waiting == ["singleton", "run"]
    assert (ended["status"], ended["output"]) == ("Completed", 1)
    assert (third_ended["status"], third_ended["output"]) == ("Completed", 4)


async def test_singleton_cancel_cancels_the_keys_run_and_starts_the_new_one(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_holder(client, "cancel")
    async with engine_for(client) as engine:
        (first,) = await engine.send({"name": "t/go", "data": {"user": "a", "n": 1, "hold": 1}})
        (run,) = await engine.wait_for_runs(first)
        await wait_until_waiting(engine, run["run_id"])
        (second,) = await engine.send({"name": "t/go", "data": {"user": "a", "n": 2}})
        (second_run,) = await engine.wait_for_runs(second, timeout_s=TIMEOUT_S)
        cancelled = await engine.wait_for_run(run["run_id"], timeout_s=TIMEOUT_S)
        completed = await engine.wait_for_run(second_run["run_id"], timeout_s=TIMEOUT_S)
        notices = (
            await engine.http.get("/v1/events", params={"name": "tideflow/function.cancelled"})
        ).json()["data"]

    assert cancelled["status"] == "Cancelled"
    assert cancelled["error"]["name"] == "Cancelled"
    assert (completed["status"], completed["output"]) == ("Completed", 2)
    assert [notice["data"]["run_id"] for notice in notices] == [run["run_id"]]
