"""Offloaded steps without an engine: `TestEngine` mocks them like other steps and makes no
request; their settings and adapters refuse bad values when made."""

from __future__ import annotations

import json
from typing import Any

import pytest
import tideflow
from tideflow._core import protocol, sealing
from tideflow.testing import TestEngine

client = tideflow.Client(app_id="unit")
KEY = "sk-unit-secret"


@client.create_function(fn_id="offloads", trigger=tideflow.TriggerEvent(event="u/offload"))
async def offloads(ctx: tideflow.Context) -> Any:
    page = await ctx.step.fetch(
        "page", "https://example.com/a", headers={"Authorization": "Bearer x", "X-Trace": "1"}
    )
    adapter = tideflow.ai.Anthropic("claude-test", api_key=KEY)
    answer = await ctx.step.ai.infer(
        "ask", adapter=adapter, body={"max_tokens": 5, "messages": [{"role": "user"}]}
    )
    short = await ctx.step.ai.wrap("wrap", lambda text, n: text[:n], answer["text"], n=2)
    return [page["status"], answer["text"], short]


async def test_the_test_engine_mocks_fetch_and_infer_steps_and_runs_wrapped_calls() -> None:
    requests: list[dict[str, Any]] = []

    def infer(request: dict[str, Any]) -> dict[str, Any]:
        requests.append(request)
        return {"text": "hello"}

    outcome = await TestEngine(offloads).execute(
        steps={"page": {"status": 204, "headers": {}, "body": ""}, "ask": infer}
    )

    assert outcome.error is None
    assert outcome.result == [204, "hello", "he"]
    assert [(call.id, call.op) for call in outcome.calls] == [
        ("page", "fetch"),
        ("ask", "ai_infer"),
        ("wrap", "ai_wrap"),
    ]
    assert outcome.calls[0].args == (
        {
            "method": "GET",
            "url": "https://example.com/a",
            "headers": {"Authorization": "[redacted]", "X-Trace": "1"},
            "body": None,
        },
    )
    assert requests == [
        {
            "provider": "anthropic",
            "url": "https://api.anthropic.com/v1/messages",
            "model": "claude-test",
            "headers": {"anthropic-version": "2023-06-01"},
            "body": {"model": "claude-test", "max_tokens": 5, "messages": [{"role": "user"}]},
        }
    ]


async def test_an_unmocked_fetch_is_refused_rather_than_sent() -> None:
    with pytest.raises(tideflow.errors.ConfigError, match=r"fetch step 'page' has no mock"):
        await TestEngine(offloads).execute()


async def test_a_url_that_is_not_http_fails_its_step_with_a_fetch_error() -> None:
    @client.create_function(fn_id="bad-url", trigger=tideflow.TriggerEvent(event="u/bad"))
    async def bad_url(ctx: tideflow.Context) -> Any:
        return await ctx.step.fetch("local", "ftp://example.com/file")

    outcome = await TestEngine(bad_url).execute()

    assert isinstance(outcome.error, tideflow.StepError)
    assert outcome.error.name == "FetchError"
    assert "absolute http(s) URL" in outcome.error.message


def test_fetch_allow_takes_hosts_and_refuses_urls() -> None:
    settings = tideflow.Settings.from_env(
        {"TIDEFLOW_FETCH_ALLOW": " API.example.com, *.partner.net,10.0.0.7:8443 "}
    )
    assert settings.fetch_allow == ("api.example.com", "*.partner.net", "10.0.0.7:8443")
    assert tideflow.Settings.from_env({}).fetch_allow == ()
    with pytest.raises(tideflow.errors.ConfigError, match=r"TIDEFLOW_FETCH_ALLOW: 'https://x'"):
        tideflow.Settings.from_env({"TIDEFLOW_FETCH_ALLOW": "https://x"})
    with pytest.raises(tideflow.errors.ConfigError, match=r"TIDEFLOW_FETCH_CONCURRENCY"):
        tideflow.Settings.from_env({"TIDEFLOW_FETCH_CONCURRENCY": "0"})


def test_adapters_refuse_an_empty_model_and_a_base_url_that_is_not_http() -> None:
    with pytest.raises(tideflow.errors.ConfigError, match=r"model: must be a non-empty string"):
        tideflow.ai.OpenAI("")
    with pytest.raises(tideflow.errors.ConfigError, match=r"base_url: must be an http\(s\) URL"):
        tideflow.ai.OpenAI("m", base_url="localhost:8000")
    assert KEY not in repr(tideflow.ai.Anthropic("m", api_key=KEY))


def test_an_explicit_api_key_leaves_the_worker_sealed_under_the_signing_key() -> None:
    ask = tideflow.ai.OpenAI("m", api_key=KEY).ask({"messages": []}, timeout_ms=1000)
    outcome = protocol.Suspended((protocol.StepRequest("h", "ask", ask),))

    sealed = sealing.seal_outcome(outcome, "the-signing-key")

    assert KEY not in json.dumps(protocol.encode(sealed))
    decoded = protocol.decode(protocol.encode(sealed))
    assert isinstance(decoded, protocol.Suspended)
    (request,) = decoded.requests
    assert isinstance(request.ask, protocol.AiInfer)
    assert request.ask.api_key is not None
    assert sealing.open_key(request.ask.api_key, "the-signing-key") == KEY
    with pytest.raises(tideflow.errors.SignatureError, match="cannot open"):
        sealing.open_key(request.ask.api_key, "another-key")
    # Without a signing key there is nothing to seal with: the key goes as it is.
    assert sealing.seal_outcome(outcome, None) == outcome
    assert sealing.open_key(KEY, None) == KEY


def test_a_plain_handler_has_the_same_offloaded_steps() -> None:
    @client.create_function(fn_id="plain", trigger=tideflow.TriggerEvent(event="u/plain"))
    def plain(ctx: tideflow.SyncContext) -> Any:
        page = ctx.step.fetch("page", "http://example.com/", method="POST", body="raw text")
        answer = ctx.step.ai.infer("ask", adapter=tideflow.ai.OpenAI("m"), body={"messages": []})
        return [page["status"], answer["id"], ctx.step.ai.wrap("wrap", str.upper, "x")]

    outcome = TestEngine(plain).execute_sync(
        steps={"page": {"status": 201, "headers": {}, "body": ""}, "ask": {"id": "c1"}}
    )

    assert outcome.result == [201, "c1", "X"]
    assert outcome.calls[0].args[0]["body"] == "raw text"
