"""Auth on the HTTP API: the signing key on `/v1`, a login session for the dashboard, event
keys on `/e/{key}`; everything open in dev, with no keys set."""

from __future__ import annotations

import httpx
import pytest
import tideflow
from tideflow.api import create_app
from tideflow.testing import Engine

KEY = "sign-me-0123456789"


def define_echo(client: tideflow.Client) -> None:
    @client.create_function(fn_id="echo", trigger=tideflow.TriggerEvent(event="t/echo"))
    async def echo(ctx: tideflow.Context) -> object:
        return ctx.event.data


def anonymous(engine: Engine, **headers: str) -> httpx.AsyncClient:
    """A client of the engine's API that sends no signing key."""
    transport = httpx.ASGITransport(app=create_app(engine.api))
    return httpx.AsyncClient(transport=transport, base_url="http://tideflow.test", headers=headers)


async def test_with_a_signing_key_v1_needs_the_bearer_token_and_health_stays_open(
    client: tideflow.Client,
) -> None:
    define_echo(client)
    async with (
        Engine(client, environ={"TIDEFLOW_SIGNING_KEY": KEY}) as engine,
        anonymous(engine) as stranger,
        anonymous(engine, Authorization="Bearer not-the-key") as forger,
    ):
        finished = await engine.finish({"name": "t/echo", "data": {"a": 1}})
        paths = ["/v1/runs", "/v1/functions", f"/v1/runs/{finished.run['run_id']}"]
        refused = [await stranger.get(path) for path in paths]
        forged = [await forger.get(path) for path in paths]
        allowed = [await engine.http.get(path) for path in paths]
        cancel = await stranger.delete(f"/v1/runs/{finished.run['run_id']}")
        health = await stranger.get("/health")
        metrics = await stranger.get("/metrics")
        page = await stranger.get("/runs")

    assert finished.output == {"a": 1}
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert [r.status_code for r in forged] == [401, 401, 401]
    assert [r.status_code for r in allowed] == [200, 200, 200]
    assert refused[0].headers["www-authenticate"] == "Bearer"
    assert cancel.status_code == 401
    assert health.status_code == 200
    assert metrics.status_code == 200
    assert page.status_code == 303
    assert page.headers["location"] == "/login?next=/runs"


async def test_a_setting_closes_metrics(client: tideflow.Client) -> None:
    define_echo(client)
    environ = {"TIDEFLOW_SIGNING_KEY": KEY, "TIDEFLOW_METRICS_AUTH": "true"}
    async with Engine(client, environ=environ) as engine, anonymous(engine) as stranger:
        refused = await stranger.get("/metrics")
        allowed = await engine.http.get("/metrics")

    assert refused.status_code == 401
    assert allowed.status_code == 200


async def test_the_login_refuses_a_wrong_key_and_a_session_opens_the_dashboard_and_api(
    client: tideflow.Client,
) -> None:
    define_echo(client)
    async with Engine(client, environ={"TIDEFLOW_SIGNING_KEY": KEY}) as engine:
        async with anonymous(engine) as browser:
            wrong = await browser.post("/login", data={"key": "guess", "next": "/functions"})
            assert "tideflow_session" not in browser.cookies
            right = await browser.post("/login", data={"key": KEY, "next": "/functions"})
            page = await browser.get("/functions")
            api = await browser.get("/v1/functions")
            await browser.post("/logout")
            after_logout = await browser.get("/v1/functions")
        async with anonymous(engine) as forger:
            forger.cookies.set("tideflow_session", "99999999999.forged")
            forged = await forger.get("/v1/functions")

    assert wrong.status_code == 401
    assert "not the signing key" in wrong.text
    assert right.status_code == 303
    assert right.headers["location"] == "/functions"
    cookie = right.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "Max-Age=43200" in cookie
    assert page.status_code == 200
    assert "test-echo" in page.text
    assert api.status_code == 200
    assert after_logout.status_code == 401
    assert forged.status_code == 401


async def test_an_expired_session_is_refused() -> None:
    from tideflow._settings import Settings
    from tideflow.api._auth import Auth

    auth = Auth(Settings.from_env({"TIDEFLOW_SIGNING_KEY": KEY, "TIDEFLOW_SESSION_TTL": "1h"}))
    session = auth.new_session(now_s=1_000_000)

    assert auth.is_session(session, now_s=1_000_000 + 3599)
    assert not auth.is_session(session, now_s=1_000_000 + 3601)
    assert not Auth(Settings.from_env({"TIDEFLOW_SIGNING_KEY": "other"})).is_session(
        session, now_s=1_000_000
    )


async def test_a_trusted_proxy_header_stands_for_a_login(client: tideflow.Client) -> None:
    define_echo(client)
    environ = {"TIDEFLOW_SIGNING_KEY": KEY, "TIDEFLOW_AUTH_PROXY_HEADER": "X-Forwarded-User"}
    async with (
        Engine(client, environ=environ) as engine,
        anonymous(engine, **{"X-Forwarded-User": "ada"}) as proxied,
        anonymous(engine) as stranger,
    ):
        page = await proxied.get("/functions")
        api = await proxied.get("/v1/functions")
        refused = await stranger.get("/v1/functions")

    assert page.status_code == 200
    assert api.status_code == 200
    assert refused.status_code == 401


async def test_several_event_keys_are_accepted_for_rotation(client: tideflow.Client) -> None:
    define_echo(client)
    environ = {"TIDEFLOW_EVENT_KEY": "current", "TIDEFLOW_EVENT_KEYS": "next, previous"}
    async with Engine(client, environ=environ) as engine:
        answers = {
            key: (await engine.http.post(f"/e/{key}", json={"name": "t/echo"})).status_code
            for key in ("current", "next", "previous", "other")
        }

    assert answers == {"current": 200, "next": 200, "previous": 200, "other": 401}


def test_settings_that_would_do_nothing_without_a_signing_key_are_refused() -> None:
    from tideflow._settings import Settings

    with pytest.raises(tideflow.errors.ConfigError, match="TIDEFLOW_METRICS_AUTH"):
        Settings.from_env({"TIDEFLOW_METRICS_AUTH": "true"})
    with pytest.raises(tideflow.errors.ConfigError, match="TIDEFLOW_AUTH_PROXY_HEADER"):
        Settings.from_env({"TIDEFLOW_AUTH_PROXY_HEADER": "X-User"})
    with pytest.raises(tideflow.errors.ConfigError, match="neither true nor false"):
        Settings.from_env({"TIDEFLOW_SIGNING_KEY": KEY, "TIDEFLOW_METRICS_AUTH": "maybe"})
    only_rotated = Settings.from_env({"TIDEFLOW_EVENT_KEYS": "a,b"})
    assert only_rotated.event_keys == ("a", "b")
    assert only_rotated.event_key == "a"


async def test_dev_mode_without_keys_stays_open(client: tideflow.Client) -> None:
    define_echo(client)
    async with Engine(client) as engine, anonymous(engine) as stranger:
        runs = await stranger.get("/v1/runs")
        page = await stranger.get("/")
        login = await stranger.get("/login")

    assert runs.status_code == 200
    assert page.status_code == 200
    assert login.status_code == 303
