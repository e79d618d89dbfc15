"""Cancelling through the HTTP API: `DELETE /v1/runs/{id}` and bulk cancellations
(`POST /v1/cancellations`), both carried out by the scheduler."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
import tideflow
from tideflow.scheduler import Scheduler
from tideflow.testing import Engine, EngineFactory

T = TypeVar("T")
CANCELLED_EVENT = "tideflow/function.cancelled"


async def poll(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float = 20.0
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {value!r}")
        await asyncio.sleep(0.05)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def waiting_step(engine: Engine, run_id: str) -> None:
    async def steps() -> list[dict[str, Any]]:
        return await engine.steps(run_id)

    await poll(steps, lambda rows: any(row["status"] == "Waiting" for row in rows))


async def cancelled_events(engine: Engine) -> list[dict[str, Any]]:
    answer = await engine.http.get("/v1/events", params={"name": CANCELLED_EVENT, "limit": "1000"})
    events: list[dict[str, Any]] = answer.json()["data"]
    return events


async def all_runs(engine: Engine, function_id: str) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    cursor: str | None = None
    while True:
        params = {
            "function_id": function_id,
            "limit": "200",
            **({"cursor": cursor} if cursor else {}),
        }
        answer = (await engine.http.get("/v1/runs", params=params)).json()
        runs.update({run["run_id"]: run for run in answer["data"]})
        cursor = answer["cursor"]
        if cursor is None:
            return runs


async def started_runs(engine: Engine, events: list[dict[str, Any]]) -> list[str]:
    """Sends events and waits until each has its run; the run ids, in the events' order."""
    event_ids = await engine.send(*events)
    run_ids = []
    for event_id in event_ids:
        (run,) = await engine.wait_for_runs(event_id, timeout_s=60)
        run_ids.append(run["run_id"])
    return run_ids


@contextlib.asynccontextmanager
async def another_scheduler(engine: Engine) -> AsyncIterator[None]:
    """A second scheduler replica on the engine's store and broker."""
    stop = asyncio.Event()
    replica = Scheduler(
        store=engine.store, broker=engine.broker, settings=engine.settings, poll_s=0.05
    )
    task = asyncio.create_task(replica.run(stop), name="second-scheduler")
    try:
        yield
    finally:
        stop.set()
        await task


# One run


async def test_a_sleeping_run_is_cancelled_by_the_scheduler_and_says_so_once(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    after: list[str] = []

    @client.create_function(fn_id="nap", trigger=tideflow.TriggerEvent(event="t/nap"))
    async def nap(ctx: tideflow.Context) -> None:
        await ctx.step.sleep("nap", "1s")
        await ctx.step.run("after", lambda: after.append("ran"))

    # Two scheduler replicas: one of them takes the request, once.
    async with engine_for(client) as engine, another_scheduler(engine):
        (run_id,) = await started_runs(engine, [{"name": "t/nap"}])
        await waiting_step(engine, run_id)
        answer = await engine.http.delete(f"/v1/runs/{run_id}")
        again = await engine.http.delete(f"/v1/runs/{run_id}")
        await asyncio.sleep(1.5)  # past the sleep's end: nothing wakes the run
        final = await engine.run(run_id)
        events = await cancelled_events(engine)
        next_timer = await engine.store.next_timer_due()

    assert answer.status_code == 200
    assert answer.json()["data"]["status"] == "Cancelled"
    assert answer.json()["data"]["error"]["name"] == "Cancelled"
    assert answer.json()["data"]["error"]["message"] == "cancelled through the API (api)"
    assert again.status_code == 409
    assert again.json()["data"]["status"] == "Cancelled"
    assert final["status"] == "Cancelled"
    assert after == []
    assert [event["data"]["run_id"] for event in events] == [run_id]
    assert events[0]["data"]["error"]["message"] == "cancelled through the API (api)"
    assert next_timer is None


async def test_a_run_waiting_for_an_event_is_cancelled_and_the_event_no_longer_resumes_it(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    resumed: list[Any] = []

    @client.create_function(fn_id="await", trigger=tideflow.TriggerEvent(event="t/await"))
    async def wait(ctx: tideflow.Context) -> None:
        approval = await ctx.step.wait_for_event("approval", event="t/approved", timeout="1h")
        await ctx.step.run("resumed", lambda: resumed.append(approval))

    async with engine_for(client) as engine:
        (run_id,) = await started_runs(engine, [{"name": "t/await"}])
        await waiting_step(engine, run_id)
        answer = await engine.http.delete(f"/v1/runs/{run_id}")
        await engine.send({"name": "t/approved", "data": {"ok": True}})
        await asyncio.sleep(0.5)
        final = await engine.run(run_id)

    assert answer.status_code == 200
    assert answer.json()["data"]["status"] == "Cancelled"
    assert final["status"] == "Cancelled"
    assert resumed == []


async def test_a_run_cancelled_mid_step_finishes_the_step_but_starts_no_other(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    started, release = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def slow() -> str:
        calls.append("slow")
        started.set()
        await release.wait()
        return "slow"

    @client.create_function(fn_id="busy", trigger=tideflow.TriggerEvent(event="t/busy"))
    async def busy(ctx: tideflow.Context) -> str:
        await ctx.step.run("slow", slow)
        await ctx.step.run("next", lambda: calls.append("next"))
        return "done"

    async with engine_for(client) as engine:
        (run_id,) = await started_runs(engine, [{"name": "t/busy"}])
        await asyncio.wait_for(started.wait(), 10)
        answer = await engine.http.delete(f"/v1/runs/{run_id}")
        release.set()
        await asyncio.sleep(0.5)
        final = await engine.run(run_id)
        steps = await engine.steps(run_id)

    assert answer.status_code == 200
    assert answer.json()["data"]["status"] == "Cancelled"
    assert final["status"] == "Cancelled"
    assert final["output"] is None
    assert calls == ["slow"]
    assert steps == []


async def test_unknown_and_ended_runs_are_answered_404_and_409(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="quick", trigger=tideflow.TriggerEvent(event="t/quick"))
    async def quick(ctx: tideflow.Context) -> str:
        return "quick"

    async with engine_for(client) as engine:
        (run_id,) = await started_runs(engine, [{"name": "t/quick"}])
        await engine.wait_for_run(run_id)
        ended = await engine.http.delete(f"/v1/runs/{run_id}")
        unknown = await engine.http.delete("/v1/runs/no-such-run")
        final = await engine.run(run_id)

    assert ended.status_code == 409
    assert ended.json()["data"]["status"] == "Completed"
    assert "Completed" in ended.json()["error"]
    assert unknown.status_code == 404
    assert final["status"] == "Completed"


# Bulk


def define_sleeper(client: tideflow.Client) -> None:
    @client.create_function(fn_id="sleeper", trigger=tideflow.TriggerEvent(event="t/sleep"))
    async def sleeper(ctx: tideflow.Context) -> None:
        await ctx.step.sleep("long", "1h")

    @client.create_function(fn_id="other", trigger=tideflow.TriggerEvent(event="t/sleep"))
    async def other(ctx: tideflow.Context) -> None:
        await ctx.step.sleep("long", "1h")


async def bulk_cancel(engine: Engine, **body: Any) -> dict[str, Any]:
    """Asks for a bulk cancellation and waits for it to complete; its last progress."""
    answer = await engine.http.post("/v1/cancellations", json=body)
    assert answer.status_code == 202, answer.text
    cancellation_id = answer.json()["id"]

    async def progress() -> dict[str, Any]:
        data: dict[str, Any] = (
            await engine.http.get(f"/v1/cancellations/{cancellation_id}")
        ).json()["data"]
        return data

    data = await poll(progress, lambda data: data["status"] == "Completed", timeout_s=60)
    assert data["id"] == cancellation_id
    return data


async def sleeping_runs(engine: Engine, events: list[dict[str, Any]]) -> list[str]:
    """Runs of `sleeper` for these events, once they all exist."""
    sent = await engine.send(*events)
    run_ids = []
    for event_id in sent:
        runs = await engine.wait_for_runs(event_id, count=2, timeout_s=60)
        run_ids += [run["run_id"] for run in runs if run["function_id"] == "test-sleeper"]
    return run_ids


async def all_asleep(engine: Engine, function_id: str, count: int) -> None:
    async def statuses() -> list[str]:
        return [run["status"] for run in (await all_runs(engine, function_id)).values()]

    await poll(statuses, lambda found: found == ["Running"] * count, timeout_s=120)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_bulk_cancellation_cancels_exactly_the_runs_queued_in_its_range(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_sleeper(client)
    async with engine_for(client) as engine, another_scheduler(engine):
        before = await sleeping_runs(
            engine, [{"name": "t/sleep", "data": {"n": n}} for n in range(5)]
        )
        await asyncio.sleep(0.01)
        after_ = utc_now()
        inside = await sleeping_runs(
            engine, [{"name": "t/sleep", "data": {"n": n}} for n in range(1000)]
        )
        await asyncio.sleep(0.01)
        before_ = utc_now()
        await asyncio.sleep(0.01)
        later = await sleeping_runs(
            engine, [{"name": "t/sleep", "data": {"n": n}} for n in range(5)]
        )
        await all_asleep(engine, "test-sleeper", 1010)
        progress = await bulk_cancel(
            engine,
            function_id="test-sleeper",
            started_after=rfc3339(after_),
            started_before=rfc3339(before_),
        )
        runs = await all_runs(engine, "test-sleeper")
        others = await all_runs(engine, "test-other")
        events = await cancelled_events(engine)

    assert progress["cancelled"] == 1000
    assert {run_id for run_id, run in runs.items() if run["status"] == "Cancelled"} == set(inside)
    assert {runs[run_id]["status"] for run_id in before + later} == {"Running"}
    assert len(others) == 1010
    assert {run["status"] for run in others.values()} == {"Running"}
    assert len(events) == 1000
    assert {event["data"]["run_id"] for event in events} == set(inside)
    assert {event["data"]["error"]["message"] for event in events} == {
        f"cancelled by bulk cancellation {progress['id']} (bulk)"
    }


async def test_a_bulk_cancellation_cancels_only_runs_whose_event_matches_if_exp(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_sleeper(client)
    async with engine_for(client) as engine:
        since = utc_now()
        groups = ["a", "b", "a", "c", "a", "b"]
        run_ids = await sleeping_runs(
            engine, [{"name": "t/sleep", "data": {"group": group}} for group in groups]
        )
        progress = await bulk_cancel(
            engine,
            function_id="test-sleeper",
            started_after=rfc3339(since - datetime.timedelta(seconds=1)),
            started_before=rfc3339(utc_now() + datetime.timedelta(minutes=1)),
            if_exp="event.data.group == 'a'",
        )
        finals = [await engine.run(run_id) for run_id in run_ids]
        events = await cancelled_events(engine)

    assert progress["cancelled"] == 3
    assert [run["status"] for run in finals] == [
        "Cancelled" if group == "a" else "Running" for group in groups
    ]
    assert sorted(event["data"]["run_id"] for event in events) == sorted(
        run_id for run_id, group in zip(run_ids, groups, strict=True) if group == "a"
    )


async def test_an_ended_run_in_the_range_is_left_as_it_ended_and_not_counted(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_sleeper(client)

    @client.create_function(fn_id="quick", trigger=tideflow.TriggerEvent(event="t/sleep"))
    async def quick(ctx: tideflow.Context) -> str:
        return "quick"

    async with engine_for(client) as engine:
        since = utc_now() - datetime.timedelta(seconds=1)
        (event_id,) = await engine.send({"name": "t/sleep"})
        runs = await engine.wait_for_runs(event_id, count=3)
        (quick_run,) = [run for run in runs if run["function_id"] == "test-quick"]
        await engine.wait_for_run(quick_run["run_id"])
        progress = await bulk_cancel(
            engine,
            function_id="test-quick",
            started_after=rfc3339(since),
            started_before=rfc3339(utc_now() + datetime.timedelta(minutes=1)),
        )
        final = await engine.run(quick_run["run_id"])

    assert progress["cancelled"] == 0
    assert final["status"] == "Completed"


async def test_bad_bulk_cancellations_are_refused_with_the_reason(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_sleeper(client)
    good = {
        "function_id": "test-sleeper",
        "started_after": "2026-01-01T00:00:00Z",
        "started_before": "2026-01-02T00:00:00Z",
    }
    async with engine_for(client) as engine:
        answers = {
            name: await engine.http.post("/v1/cancellations", json=body)
            for name, body in {
                "unknown function": {**good, "function_id": "test-nope"},
                "no function": {**good, "function_id": None},
                "bad time": {**good, "started_after": "yesterday"},
                "naive time": {**good, "started_before": "2026-01-02T00:00:00"},
                "missing time": {
                    "function_id": "test-sleeper",
                    "started_after": good["started_after"],
                },
                "empty range": {**good, "started_before": good["started_after"]},
                "bad if_exp": {**good, "if_exp": "event.data.x ==="},
                "not an object": [good],
            }.items()
        }
        not_json = await engine.http.post("/v1/cancellations", content=b"{")
        unknown = await engine.http.get("/v1/cancellations/no-such-cancellation")

    codes = {name: answer.status_code for name, answer in answers.items()}
    assert codes == {**dict.fromkeys(answers, 400), "unknown function": 404}
    assert "test-nope" in answers["unknown function"].json()["error"]
    assert "function_id" in answers["no function"].json()["error"]
    assert "started_after" in answers["bad time"].json()["error"]
    assert "UTC offset" in answers["naive time"].json()["error"]
    assert "started_before" in answers["missing time"].json()["error"]
    assert "earlier" in answers["empty range"].json()["error"]
    assert "if_exp" in answers["bad if_exp"].json()["error"]
    assert not_json.status_code == 400
    assert unknown.status_code == 404
