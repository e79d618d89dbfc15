"""Offloaded steps (`step.fetch`, `step.ai.infer`) and `step.ai.wrap`: the engine makes the
request while the run waits, holding no worker and no concurrency slot; the result is memoized,
5xx answers are retried, 4xx ones returned, bad input fails the step. Against a local HTTP
server this test starts, on every backend."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import prometheus_client
import pytest
import tideflow
from http_fake import USAGE, FakeServer, fake_server
from tideflow.testing import Engine, EngineFactory

SECRET = "sk-test-0123456789-never-stored"


def _offloaded(result: str) -> float:
    sample = prometheus_client.REGISTRY.get_sample_value(
        "tideflow_worker_offloaded_requests_total", {"op": "fetch", "result": result}
    )
    return sample or 0.0


async def _until_waiting(engine: Engine, run_id: str) -> dict[str, Any]:
    for _ in range(500):
        steps = await engine.steps(run_id)
        if steps and steps[0]["status"] == "Waiting":
            return steps[0]
        await asyncio.sleep(0.01)
    raise AssertionError(f"run {run_id} never waited on its fetch")


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with fake_server() as running:
        yield running


async def test_a_fetch_returns_status_headers_and_body_once_and_a_4xx_is_returned(
    client: tideflow.Client, engine_for: EngineFactory, server: FakeServer
) -> None:
    @client.create_function(fn_id="fetching", trigger=tideflow.TriggerEvent(event="t/fetch"))
    async def fetching(ctx: tideflow.Context) -> Any:
        got = await ctx.step.fetch("get", f"{server.url}/json")
        text = await ctx.step.fetch("text", f"{server.url}/text")
        posted = await ctx.step.fetch(
            "post", f"{server.url}/echo", method="POST", body={"n": 1}, timeout="5s"
        )
        missing = await ctx.step.fetch("missing", f"{server.url}/missing")
        return {
            "get": [got["status"], got["body"], got["headers"]["content-type"]],
            "text": text["body"],
            "posted": posted["body"],
            "missing": [missing["status"], missing["body"]],
        }

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/fetch"})

    assert result.status == "Completed", result.run
    assert result.output == {
        "get": [200, {"hello": "world"}, "application/json"],
        "text": "plain words",
        "posted": {"body": '{"n":1}', "content_type": "application/json"},
        "missing": [404, {"error": "no such thing"}],
    }
    # Each request made once, though the handler replayed past it three more times.
    assert dict(server.seen.hits) == {"/json": 1, "/text": 1, "/echo": 1, "/missing": 1}
    assert [(s["name"], s["op"], s["status"]) for s in result.steps] == [
        ("get", "fetch", "Completed"),
        ("text", "fetch", "Completed"),
        ("post", "fetch", "Completed"),
        ("missing", "fetch", "Completed"),
    ]
    assert result.steps[2]["input"] == {
        "method": "POST",
        "url": f"{server.url}/echo",
        "headers": {},
        "body": {"n": 1},
    }


async def test_5xx_answers_are_failed_attempts_retried_with_the_steps_retries(
    client: tideflow.Client, engine_for: EngineFactory, server: FakeServer
) -> None:
    @client.create_function(
        fn_id="flaky", trigger=tideflow.TriggerEvent(event="t/flaky"), retries=3
    )
    async def flaky(ctx: tideflow.Context) -> Any:
        recovered = await ctx.step.fetch("recovers", f"{server.url}/flaky?fail=2")
        try:
            await ctx.step.fetch("never", f"{server.url}/flaky-never?fail=99")
        except tideflow.StepError as exc:
            return {"recovered": recovered["body"], "error": exc.name}
        return None

    failed_before = _offloaded("attempt_failed")
    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/flaky"}, timeout_s=20)

    assert result.status == "Completed", result.run
    assert result.output == {"recovered": {"hits": 3}, "error": "FetchServerError"}
    assert server.seen.hits["/flaky"] == 3
    assert server.seen.hits["/flaky-never"] == 4  # the first attempt and 3 retries
    recovers, never = result.steps
    assert (recovers["status"], recovers["attempt"]) == ("Completed", 2)
    assert (never["status"], never["attempt"]) == ("Failed", 3)
    assert never["error"]["name"] == "FetchServerError"
    assert "503" in never["error"]["message"]
    # 2 failed attempts of one step, and all 4 of the other
    assert _offloaded("attempt_failed") - failed_before == 6


async def test_bad_input_and_an_oversized_response_fail_the_step_with_a_clear_error(
    client: tideflow.Client, engine_for: EngineFactory, server: FakeServer
) -> None:
    async def attempt(ctx: tideflow.Context, step_id: str, url: str, **options: Any) -> str:
        try:
            await ctx.step.fetch(step_id, url, **options)
        except tideflow.StepError as exc:
            return f"{exc.name}: {exc.message}"
        return "no error"

    @client.create_function(fn_id="bad", trigger=tideflow.TriggerEvent(event="t/bad"))
    async def bad(ctx: tideflow.Context) -> Any:
        return [
            await attempt(ctx, "scheme", "file:///etc/passwd"),
            await attempt(ctx, "body", f"{server.url}/echo", method="POST", body={1, 2}),
            await attempt(ctx, "big", f"{server.url}/big"),
            await attempt(ctx, "ok", f"{server.url}/json"),
        ]

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/bad"})

    assert result.status == "Completed", result.run
    scheme, body, big, ok = result.output
    assert scheme.startswith("FetchError: fetch url must be an absolute http(s) URL")
    assert body.startswith("FetchError: fetch body is not JSON-serialisable")
    assert big.startswith("FetchError: the response is over 4194304 bytes")
    assert ok == "no error"
    assert "/echo" not in server.seen.hits
    assert [s["status"] for s in result.steps] == ["Failed", "Failed", "Failed", "Completed"]


async def test_hosts_outside_tideflow_fetch_allow_are_refused(
    client: tideflow.Client, engine_for: EngineFactory, server: FakeServer
) -> None:
    @client.create_function(fn_id="guarded", trigger=tideflow.TriggerEvent(event="t/guard"))
    async def guarded(ctx: tideflow.Context) -> Any:
        allowed = await ctx.step.fetch("allowed", f"{server.url}/json")
        try:
            await ctx.step.fetch("internal", f"http://localhost:{server.port}/json")
        except tideflow.StepError as exc:
            return [allowed["status"], exc.name, exc.message]
        return None

    allow = f"api.example.com,127.0.0.1:{server.port}"
    async with engine_for(client, TIDEFLOW_FETCH_ALLOW=allow) as engine:
        result = await engine.finish({"name": "t/guard"})

    assert result.output == [
        200,
        "FetchError",
        "host 'localhost' is not in TIDEFLOW_FETCH_ALLOW",
    ], result.run
    assert server.seen.hits["/json"] == 1


async def test_runs_waiting_on_fetches_hold_no_concurrency_slot(
    client: tideflow.Client, engine_for: EngineFactory, server: FakeServer
) -> None:
    @client.create_function(
        fn_id="slow", trigger=tideflow.TriggerEvent(event="t/slow"), concurrency=2
    )
    async def slow(ctx: tideflow.Context) -> Any:
        answer = await ctx.step.fetch("slow", f"{server.url}/slow?s=2")
        return answer["body"]

    async with engine_for(client) as engine:
        ids = await engine.send(*[{"name": "t/slow", "data": {"n": n}} for n in range(20)])
        runs = [run for event_id in ids for run in await engine.wait_for_runs(event_id)]
        waiting = await _until_waiting(engine, runs[0]["run_id"])
        page = (await engine.http.get(f"/runs/{runs[0]['run_id']}")).text
        ended = [await engine.wait_for_run(run["run_id"], timeout_s=30) for run in runs]

    assert [run["output"] for run in ended] == [{"slow": True}] * 20
    # Holding a slot while it waited, a run would let one other in: two requests at a time,
    # ten rounds. None held, all 20 were in flight together.
    assert server.seen.peak == 20
    assert (waiting["op"], waiting["input"]["url"]) == ("fetch", f"{server.url}/slow?s=2")
    assert "The engine is making its request" in page


async def test_ai_infer_records_model_prompt_and_usage_but_never_the_key(
    client: tideflow.Client, engine_for: EngineFactory, server: FakeServer
) -> None:
    messages = [{"role": "user", "content": "say hi"}]

    def summarise(text: str, *, words: int) -> str:
        return " ".join(text.split()[:words])

    @client.create_function(fn_id="ai", trigger=tideflow.TriggerEvent(event="t/ai"))
    async def ai(ctx: tideflow.Context) -> Any:
        adapter = tideflow.ai.OpenAI("tiny-model", api_key=SECRET, base_url=f"{server.url}/v1")
        answer = await ctx.step.ai.infer("ask", adapter=adapter, body={"messages": messages})
        text = answer["choices"][0]["message"]["content"]
        short = await ctx.step.ai.wrap("shorten", summarise, text, words=1)
        claude = tideflow.ai.Anthropic("claude-tiny", api_key=SECRET, base_url=f"{server.url}/v1")
        reply = await ctx.step.ai.infer(
            "ask-claude", adapter=claude, body={"max_tokens": 10, "messages": messages}
        )
        return {"text": text, "short": short, "claude": reply["content"][0]["text"]}

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/ai"})
        shown = (await engine.http.get(f"/v1/runs/{result.run['run_id']}/steps")).text
        page = (await engine.http.get(f"/runs/{result.run['run_id']}")).text

    assert result.output == {"text": "hi there", "short": "hi", "claude": "bonjour"}, result.run
    request, to_claude = server.seen.requests
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert json.loads(request["body"]) == {"model": "tiny-model", "messages": messages}
    assert to_claude["headers"]["x-api-key"] == SECRET
    assert to_claude["headers"]["anthropic-version"] == "2023-06-01"
    ask, shorten, ask_claude = result.steps
    assert ask_claude["ai"] == {
        "model": "claude-tiny",
        "prompt": messages,
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    assert ask["op"] == "ai_infer"
    assert ask["ai"] == {
        "model": "tiny-model",
        "prompt": messages,
        "usage": {"prompt_tokens": 12, "completion_tokens": 5},
    }
    assert ask["output"]["usage"] == USAGE
    assert (shorten["op"], shorten["input"]) == (
        "ai_wrap",
        {"args": ["hi there"], "kwargs": {"words": 1}},
    )
    assert SECRET not in shown
    # The dashboard's run page shows the model, the token counts and the prompt; not the key.
    assert "tiny-model" in page
    assert "12 prompt · 5 completion" in page
    assert "say hi" in page
    assert SECRET not in page


async def test_a_missing_api_key_fails_the_step_naming_the_variable(
    client: tideflow.Client, engine_for: EngineFactory, server: FakeServer
) -> None:
    @client.create_function(fn_id="keyless", trigger=tideflow.TriggerEvent(event="t/keyless"))
    async def keyless(ctx: tideflow.Context) -> Any:
        adapter = tideflow.ai.OpenAI(
            "m", base_url=f"{server.url}/v1", api_key_env="TIDEFLOW_TEST_UNSET_KEY"
        )
        return await ctx.step.ai.infer("ask", adapter=adapter, body={"messages": []})

    async with engine_for(client) as engine:
        result = await engine.finish({"name": "t/keyless"})

    assert result.status == "Failed"
    assert result.run["error"]["name"] == "FetchError"
    assert "TIDEFLOW_TEST_UNSET_KEY" in result.run["error"]["message"]
    assert server.seen.requests == []
