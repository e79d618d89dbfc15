from __future__ import annotations

import asyncio
import json
from typing import Any

import pydantic
import pytest
import tideflow
from tideflow.testing import EngineFactory


def define_echo(client: tideflow.Client) -> None:
    @client.create_function(fn_id="echo", trigger=tideflow.TriggerEvent(event="t/echo"))
    async def echo(ctx: tideflow.Context) -> Any:
        return ctx.event.data


async def test_post_e_answers_one_engine_id_per_event_in_order(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo(client)
    async with engine_for(client) as engine:
        answer = await engine.http.post(
            "/e/key",
            json=[{"name": "t/echo", "data": {"n": n}, "id": f"dedup-{n}"} for n in range(3)],
        )
        ids = answer.json()["ids"]
        outputs = []
        for event_id in ids:
            (run,) = await engine.wait_for_runs(event_id)
            outputs.append((await engine.wait_for_run(run["run_id"]))["output"])

    assert answer.status_code == 200
    assert answer.json()["status"] == 200
    assert len(set(ids)) == 3
    assert not any(event_id.startswith("dedup") for event_id in ids)
    assert outputs == [{"n": 0}, {"n": 1}, {"n": 2}]


async def test_an_event_id_seen_within_a_day_is_stored_and_starts_no_run(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo(client)
    async with engine_for(client) as engine:
        (first,) = await engine.send({"name": "t/echo", "id": "order-1", "data": {"v": 1}})
        (second,) = await engine.send({"name": "t/echo", "id": "order-1", "data": {"v": 2}})
        (other,) = await engine.send({"name": "t/echo", "id": "order-2", "data": {"v": 3}})
        await engine.wait_for_runs(first)
        await engine.wait_for_runs(other)
        await asyncio.sleep(0.2)
        duplicate_runs = await engine.runs(second)
        stored = (await engine.http.get("/v1/events", params={"name": "t/echo"})).json()["data"]

    assert duplicate_runs == []
    assert [event["internal_id"] for event in stored] == [other, second, first]
    assert [event["id"] for event in stored] == ["order-2", "order-1", "order-1"]


async def test_trigger_expressions_and_lists_of_triggers_pick_events(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(
        fn_id="big-orders",
        trigger=[
            tideflow.TriggerEvent(event="t/order", expression="event.data.total >= 100"),
            tideflow.TriggerEvent(event="t/vip.*"),
        ],
    )
    async def big_orders(ctx: tideflow.Context) -> str:
        return ctx.event.name

    async with engine_for(client) as engine:
        small, big, vip = await engine.send(
            {"name": "t/order", "data": {"total": 5}},
            {"name": "t/order", "data": {"total": 500}},
            {"name": "t/vip.joined", "data": {}},
        )
        (big_run,) = await engine.wait_for_runs(big)
        (vip_run,) = await engine.wait_for_runs(vip)
        await asyncio.sleep(0.2)
        assert await engine.runs(small) == []
        assert (await engine.wait_for_run(big_run["run_id"]))["output"] == "t/order"
        assert (await engine.wait_for_run(vip_run["run_id"]))["output"] == "t/vip.joined"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "body is not valid JSON"),
        (json.dumps({"data": {}}).encode(), "name is required"),
        (json.dumps({"name": ""}).encode(), "non-empty name"),
        (json.dumps({"name": "x", "data": [1]}).encode(), "data must be a JSON object"),
        (json.dumps([{"name": "ok"}, 3]).encode(), "event 1: expected a JSON object"),
        (json.dumps([]).encode(), "no events"),
        (json.dumps({"name": "tideflow/function.failed"}).encode(), "reserved"),
        (
            json.dumps({"name": "x", "data": {"blob": "x" * 600_000}}).encode(),
            "the limit is 524288",
        ),
        (json.dumps([{"name": "x"}] * 5001).encode(), "the limit is 5000"),
    ],
)
async def test_bad_events_get_400_with_the_reason_and_nothing_is_stored(
    client: tideflow.Client, engine_for: EngineFactory, body: bytes, message: str
) -> None:
    define_echo(client)
    async with engine_for(client) as engine:
        answer = await engine.http.post("/e/key", content=body)
        stored = (await engine.http.get("/v1/events")).json()["data"]
        (good,) = await engine.send({"name": "t/echo", "data": {"still": "works"}})
        (run,) = await engine.wait_for_runs(good)

    assert answer.status_code == 400
    assert message in answer.json()["error"]
    assert stored == []
    assert run["function_id"] == "test-echo"


async def test_event_key_is_required_when_configured(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo(client)
    async with engine_for(client, TIDEFLOW_EVENT_KEY="s3cret") as engine:
        refused = await engine.http.post("/e/wrong", json={"name": "t/echo"})
        accepted = await engine.http.post("/e/s3cret", json={"name": "t/echo"})

    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid event key"
    assert accepted.status_code == 200


async def test_unknown_runs_are_404(client: tideflow.Client, engine_for: EngineFactory) -> None:
    define_echo(client)
    async with engine_for(client) as engine:
        answers = [
            await engine.http.get("/v1/runs/nope"),
            await engine.http.get("/v1/runs/nope/steps"),
            await engine.http.delete("/v1/runs/nope"),
        ]
        event_runs = await engine.http.get("/v1/events/nope/runs")

    assert [a.status_code for a in answers] == [404, 404, 404]
    assert all("nope" in a.json()["error"] for a in answers)
    assert event_runs.json() == {"data": []}


async def test_cancelling_a_run_stops_it_and_a_finished_run_answers_409(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    after_sleep: list[int] = []

    @client.create_function(fn_id="long", trigger=tideflow.TriggerEvent(event="t/long"))
    async def long(ctx: tideflow.Context) -> None:
        await ctx.step.sleep("nap", "2s")
        await ctx.step.run("after", lambda: after_sleep.append(1))

    async with engine_for(client) as engine:
        (event_id,) = await engine.send({"name": "t/long"})
        (run,) = await engine.wait_for_runs(event_id)
        await engine.wait_for_run(run["run_id"], status=["Running"])
        cancelled = await engine.http.delete(f"/v1/runs/{run['run_id']}")
        again = await engine.http.delete(f"/v1/runs/{run['run_id']}")
        await asyncio.sleep(2.3)
        final = await engine.run(run["run_id"])

    assert cancelled.status_code == 200
    assert cancelled.json()["data"]["status"] == "Cancelled"
    assert again.status_code == 409
    assert again.json()["data"]["status"] == "Cancelled"
    assert final["status"] == "Cancelled"
    assert after_sleep == []


async def test_handler_result_that_is_not_json_fails_the_run_with_the_reason(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="bad-return", trigger=tideflow.TriggerEvent(event="t/bad-return"))
    async def bad_return(ctx: tideflow.Context) -> object:
        return object()

    @client.create_function(fn_id="bad-step", trigger=tideflow.TriggerEvent(event="t/bad-step"))
    async def bad_step(ctx: tideflow.Context) -> object:
        return await ctx.step.run("set", lambda: {1, 2})

    async with engine_for(client) as engine:
        returned = await engine.finish({"name": "t/bad-return"})
        stepped = await engine.finish({"name": "t/bad-step"})

    assert returned.status == "Failed"
    assert "the handler's return value is not JSON-serialisable" in returned.run["error"]["message"]
    assert stepped.status == "Failed"
    assert "step 'set' output is not JSON-serialisable" in stepped.run["error"]["message"]


async def test_schemas_validate_sent_data_and_type_the_handlers_event(
    engine_for: EngineFactory,
) -> None:
    class Signup(pydantic.BaseModel):
        user_id: int
        plan: str = "free"

    client = tideflow.Client(app_id="typed", schemas={"t/signup": Signup})
    seen: list[str] = []

    @client.create_function(fn_id="signup", trigger=tideflow.TriggerEvent(event="t/signup"))
    async def signup(ctx: tideflow.Context) -> str:
        seen.append(type(ctx.event.data).__name__)
        return f"{ctx.event.data.user_id}:{ctx.event.data.plan}"

    async with engine_for(client) as engine:
        with pytest.raises(tideflow.errors.EventError, match="does not match its schema"):
            await client.send({"name": "t/signup", "data": {"user_id": "not a number"}})
        (event_id,) = await client.send(tideflow.Event("t/signup", {"user_id": 5}))
        (run,) = await engine.wait_for_runs(event_id)
        run = await engine.wait_for_run(run["run_id"])

    assert run["output"] == "5:free"
    assert seen[0] == "Signup"


async def test_health_reports_database_and_broker(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    define_echo(client)
    async with engine_for(client) as engine:
        answer = await engine.http.get("/health")

    assert (answer.status_code, answer.json()) == (200, {"database": True, "broker": True})


async def test_many_runs_complete(client: tideflow.Client, engine_for: EngineFactory) -> None:
    @client.create_function(fn_id="add", trigger=tideflow.TriggerEvent(event="t/add"))
    async def add(ctx: tideflow.Context) -> int:
        a: int = await ctx.step.run("a", lambda: ctx.event.data["n"])
        b: int = await ctx.step.run("b", lambda: a + 1)
        return b

    async with engine_for(client) as engine:
        ids = await engine.send(*({"name": "t/add", "data": {"n": n}} for n in range(100)))
        outputs = []
        for event_id in ids:
            (run,) = await engine.wait_for_runs(event_id)
            outputs.append((await engine.wait_for_run(run["run_id"]))["output"])

    assert outputs == [n + 1 for n in range(100)]


async def test_a_step_output_over_4_mib_fails_the_step_with_the_limit(
    client: tideflow.Client, engine_for: EngineFactory
) -> None:
    @client.create_function(fn_id="huge", trigger=tideflow.TriggerEvent(event="t/huge"))
    async def huge(ctx: tideflow.Context) -> str:
        try:
            await ctx.step.run("blob", lambda: "x" * (4 * 1024 * 1024 + 1))
        except tideflow.StepError as exc:
            return exc.message
        return "no error"

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/huge"})

    assert result.status == "Completed"
    assert result.output == "step 'blob' output is 4194307 bytes; the limit is 4194304 (4 MiB)"
