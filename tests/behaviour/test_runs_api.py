"""The REST routes over runs, functions and events that the dashboard is built on."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import tideflow
from tideflow.testing import Engine, EngineFactory

T = TypeVar("T")


def define_echo_and_boom(client: tideflow.Client) -> None:
    @client.create_function(fn_id="echo", trigger=tideflow.TriggerEvent(event="t/echo"))
    async def echo(ctx: tideflow.Context) -> Any:
        return ctx.event.data

    @client.create_function(fn_id="boom", trigger=tideflow.TriggerEvent(event="t/boom"), retries=0)
    async def boom(ctx: tideflow.Context) -> None:
        raise tideflow.NonRetriableError(f"boom {ctx.event.data['n']}")


async def started_run(engine: Engine, event: dict[str, Any]) -> str:
    """Sends an event and waits for its run to end; returns the run's id."""
    (event_id,) = await engine.send(event)
    (run,) = await engine.wait_for_runs(event_id)
    await engine.wait_for_run(run["run_id"])
    run_id: str = run["run_id"]
    return run_id


async def get_data(engine: Engine, path: str) -> Any:
    return (await engine.http.get(path)).json()["data"]


async def poll(
    read: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout_s: float = 10.0
) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"still {value!r}")
        await asyncio.sleep(0.05)


async def ended(engine: Engine, run_id: str) -> dict[str, Any]:
    """A run answered by id before it exists (invoke, rerun), once it has ended."""
    await poll(lambda: engine.http.get(f"/v1/runs/{run_id}"), lambda r: r.status_code == 200)
    return await engine.wait_for_run(run_id)


async def all_pages(engine: Engine, **params: str) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        answer = (await engine.http.get("/v1/runs", params=query)).json()
        pages.append([run["run_id"] for run in answer["data"]])
        cursor = answer["cursor"]
        if cursor is None:
            return pages


async def test_runs_are_listed_newest_first_page_by_page_with_a_cursor(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo_and_boom(client)
    async with engine_for(client) as engine:
        started = [
            await started_run(engine, {"name": "t/echo", "data": {"n": n}}) for n in range(5)
        ]
        pages = await all_pages(engine, limit="2")
        whole = (await engine.http.get("/v1/runs")).json()

    assert pages == [started[4:2:-1], started[2:0:-1], started[0:1]]
    assert [run["run_id"] for run in whole["data"]] == started[::-1]
    assert whole["cursor"] is None
    assert whole["data"][0]["output"] == {"n": 4}
    assert whole["data"][0]["function_id"] == "test-echo"


async def test_runs_are_filtered_by_function_status_and_time(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo_and_boom(client)
    async with engine_for(client) as engine:
        early = await started_run(engine, {"name": "t/echo", "data": {"n": 0}})
        await asyncio.sleep(0.01)
        since = datetime.datetime.now(datetime.UTC)
        failed = await started_run(engine, {"name": "t/boom", "data": {"n": 1}})
        late = await started_run(engine, {"name": "t/echo", "data": {"n": 2}})
        until_ms = int(time.time() * 1000) + 1

        async def ids(**params: str) -> list[str]:
            answer = await engine.http.get("/v1/runs", params=params)
            assert answer.status_code == 200, answer.text
            return [run["run_id"] for run in answer.json()["data"]]

        by_function = await ids(function_id="test-echo")
        by_status = await ids(status="Failed")
        by_both = await ids(function_id="test-echo", status="Failed")
        since_then = await ids(**{"from": since.isoformat()})
        before_then = await ids(to=since.isoformat().replace("+00:00", "Z"))
        window = await ids(**{"from": since.isoformat(), "to": str(until_ms)})
        paged = await all_pages(engine, function_id="test-echo", limit="1")

    assert by_function == [late, early]
    assert by_status == [failed]
    assert by_both == []
    assert since_then == [late, failed]
    assert before_then == [early]
    assert window == [late, failed]
    assert paged == [[late], [early]]


async def test_bad_run_queries_are_refused_with_the_reason(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo_and_boom(client)
    async with engine_for(client) as engine:
        answers = {
            name: await engine.http.get("/v1/runs", params=params)
            for name, params in {
                "status": {"status": "Sleeping"},
                "cursor": {"cursor": "page-two"},
                "naive": {"from": "2026-01-01T00:00:00"},
                "limit": {"limit": "0"},
            }.items()
        }

    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(
        answers, 400
    )
    assert "Sleeping" in answers["status"].json()["error"]
    assert "cursor" in answers["cursor"].json()["error"]
    assert "UTC offset" in answers["naive"].json()["error"]


async def test_rerun_starts_a_new_run_of_the_function_with_the_same_event(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo_and_boom(client)
    async with engine_for(client) as engine:
        first = await started_run(engine, {"name": "t/boom", "data": {"n": 7}, "id": "once"})
        answer = await engine.http.post(f"/v1/runs/{first}/rerun")
        rerun_id = answer.json()["run_id"]
        again = await ended(engine, rerun_id)
        unknown = await engine.http.post("/v1/runs/no-such-run/rerun")

    assert answer.status_code == 200
    assert rerun_id != first
    assert again["function_id"] == "test-boom"
    assert again["status"] == "Failed"
    assert again["error"]["message"] == "boom 7"
    assert unknown.status_code == 404


async def test_functions_are_listed_and_invoked_with_data(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo_and_boom(client)
    async with engine_for(client) as engine:
        await started_run(engine, {"name": "t/boom", "data": {"n": 1}})
        functions = (await engine.http.get("/v1/functions")).json()["data"]
        answer = await engine.http.post(
            "/v1/functions/test-echo/invoke", json={"data": {"hello": "world"}}
        )
        invoked = await ended(engine, answer.json()["run_id"])
        missing = await engine.http.post("/v1/functions/test-nope/invoke", json={"data": {}})
        bad = await engine.http.post("/v1/functions/test-echo/invoke", json={"data": [1]})

    by_id = {function["function_id"]: function for function in functions}
    assert sorted(by_id) == ["test-boom", "test-echo"]
    assert by_id["test-echo"]["app_id"] == "test"
    assert by_id["test-echo"]["name"] == "echo"
    assert by_id["test-echo"]["triggers"] == [{"event": "t/echo", "expression": None}]
    assert by_id["test-boom"]["config"]["retries"] == 0
    assert by_id["test-boom"]["runs_24h"] == {"Failed": 1}
    assert invoked["status"] == "Completed"
    assert invoked["output"] == {"hello": "world"}
    assert missing.status_code == 404
    assert bad.status_code == 400


async def test_events_show_the_runs_they_started_or_why_none(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo_and_boom(client)
    async with engine_for(client) as engine:
        started = await engine.http.post("/v1/events", json={"name": "t/echo", "id": "k"})
        (started_id,) = started.json()["ids"]
        (duplicate_id,) = await engine.send({"name": "t/echo", "id": "k"})
        (unmatched_id,) = await engine.send({"name": "t/nobody", "data": {"x": 1}})
        (run,) = await engine.wait_for_runs(started_id)

        async def status(event_id: str) -> dict[str, Any]:
            while True:
                data: dict[str, Any] = (await engine.http.get(f"/v1/events/{event_id}")).json()[
                    "data"
                ]
                if data["status"] != "pending":
                    return data
                await asyncio.sleep(0.02)

        states = {
            event_id: await status(event_id)
            for event_id in (started_id, duplicate_id, unmatched_id)
        }
        listed = (await engine.http.get("/v1/events")).json()["data"]
        unknown = await engine.http.get("/v1/events/nope")

    assert states[started_id]["status"] == "started"
    assert states[started_id]["run_ids"] == [run["run_id"]]
    assert states[duplicate_id]["status"] == "duplicate"
    assert states[unmatched_id]["status"] == "no function matched"
    assert states[unmatched_id]["data"] == {"x": 1}
    assert {
        event["internal_id"]: event["status"] for event in listed if event["name"].startswith("t/")
    } == {
        started_id: "started",
        duplicate_id: "duplicate",
        unmatched_id: "no function matched",
    }
    assert unknown.status_code == 404


async def test_a_sleeping_step_shows_its_deadline(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="nap", trigger=tideflow.TriggerEvent(event="t/nap"))
    async def nap(ctx: tideflow.Context) -> None:
        await ctx.step.sleep("nap", datetime.timedelta(hours=1))

    async with engine_for(client) as engine:
        before = datetime.datetime.now(datetime.UTC)
        (event_id,) = await engine.send({"name": "t/nap"})
        (run,) = await engine.wait_for_runs(event_id)
        steps = await poll(lambda: engine.steps(run["run_id"]), bool)

    (step,) = steps
    deadline = datetime.datetime.fromisoformat(step["deadline"])
    assert step["status"] == "Waiting"
    assert before + datetime.timedelta(minutes=59) < deadline
    assert deadline < before + datetime.timedelta(minutes=61)


async def test_processes_report_heartbeats(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo_and_boom(client)
    async with engine_for(client) as engine:
        await started_run(engine, {"name": "t/echo"})
        processes = await poll(
            lambda: get_data(engine, "/v1/processes"),
            lambda seen: {"scheduler", "worker", "api"} <= {p["kind"] for p in seen},
        )

    (worker,) = [p for p in processes if p["kind"] == "worker"]
    assert worker["app_ids"] == ["test"]
    assert 0 <= worker["heartbeat_age_s"] < 60


async def test_queues_count_jobs_no_worker_has_taken(
    client: tideflow.Client, backend_environ: dict[str, str]
) -> None:
    define_echo_and_boom(client)
    async with Engine(client, environ=backend_environ, run_worker=False) as engine:
        configs = [function.config() for function in engine.functions]
        await engine.store.register_functions("test", configs, int(time.time() * 1000))
        for n in range(2):
            (event_id,) = await engine.send({"name": "t/echo", "data": {"n": n}})
            await engine.wait_for_runs(event_id, timeout_s=20)
        queues = await poll(
            lambda: get_data(engine, "/v1/queues"),
            lambda depths: depths["jobs_queued"] == {"test": 2},
        )

    assert queues == {"jobs_queued": {"test": 2}, "events_unprocessed": 0}


async def test_the_stream_sends_a_change_with_the_newest_runs(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo_and_boom(client)
    async with engine_for(client) as engine:
        run_id = await started_run(engine, {"name": "t/echo"})
        listing = await engine.http.get("/v1/stream", params={"limit": "1"})
        one = await engine.http.get("/v1/stream", params={"limit": "1", "run_id": run_id})

    assert listing.headers["content-type"].startswith("text/event-stream")
    assert "event: change" in listing.text
    assert f'["{run_id}", "Completed"]' in listing.text
    assert '"status": "Completed"' in one.text
