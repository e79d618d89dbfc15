"""The HTTP API: event ingest, runs and steps, signals, health."""

from __future__ import annotations

import functools
import importlib.metadata
import json
import logging
import time
from typing import Any

import prometheus_client
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from tideflow import Settings, errors
from tideflow import _event as ev
from tideflow._core.ids import new_id
from tideflow.broker import Broker, Dispatcher, Seal
from tideflow.store import Store, heartbeat
from tideflow.store import models as m

from . import _cancellations, _dashboard, _metrics, _realtime, _rest
from . import _flow as flow
from . import _openapi as oa
from . import _schemas as sc
from ._auth import Auth
from ._cancellations import Cancellations
from ._dashboard import Dashboard
from ._limits import EventKeyLimiter, RequestLimits, retry_after
from ._realtime import realtime_routes
from ._rest import Rest, is_count
from ._time import iso

logger = logging.getLogger(__name__)

MAX_LIST = 1000
HEARTBEAT_S = 5.0


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Api:
    def __init__(self, *, store: Store, broker: Broker, settings: Settings) -> None:
        self._store = store
        self._broker = broker
        self.settings = settings
        self._dispatcher = Dispatcher(broker, Seal(settings.signing_key))
        self.auth = Auth(settings)
        self.rest = Rest(store=store, broker=broker)
        self.cancellations = Cancellations(store=store)
        self.process_id = f"api-{new_id()}"
        rate = settings.event_key_rate
        self._limiter = None if rate is None else EventKeyLimiter(rate)
        self._last_beat_s = 0.0

    async def beat(self) -> None:
        """Records this API process as seen, at most every few seconds (it has no loop of its
        own: it is seen while it serves requests)."""
        if time.monotonic() - self._last_beat_s < HEARTBEAT_S:
            return
        self._last_beat_s = time.monotonic()
        await heartbeat.record(self._store, self.process_id, "api", ())

    async def ingest(self, records: list[dict[str, Any]]) -> list[str]:
        """Stores validated event records, then announces them; returns their ids."""
        now = _now_ms()
        events = [m.EventRecord.from_wire(item, now) for item in records]
        await self.rest.announce(events)
        return [event.internal_id for event in events]

    async def send_events(self, request: Request) -> Response:
        key = request.path_params["event_key"]
        if not self.auth.is_event_key(key):
            _metrics.EVENTS_RECEIVED.inc()
            _metrics.EVENTS_REJECTED.labels("invalid_key").inc()
            return _error(401, "invalid event key")
        try:
            payload = json.loads(await request.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            _metrics.EVENTS_RECEIVED.inc()
            _metrics.EVENTS_REJECTED.labels("invalid_json").inc()
            return _error(400, f"body is not valid JSON: {exc}")
        count = len(payload) if isinstance(payload, list) else 1
        _metrics.EVENTS_RECEIVED.inc(count)
        wait_s = None if self._limiter is None else self._limiter.admit(key, count)
        if wait_s is not None:
            _metrics.EVENTS_REJECTED.labels("rate_limited").inc(count)
            response = _error(429, "this event key is over TIDEFLOW_EVENT_KEY_RATE; retry later")
            response.headers["Retry-After"] = retry_after(wait_s)
            return response
        try:
            events = ev.parse_events(payload)
        except errors.EventError as exc:
            _metrics.EVENTS_REJECTED.labels("invalid_event").inc(
                len(payload) if isinstance(payload, list) else 1
            )
            return _error(400, str(exc))
        records = []
        for event in events:
            record = event.model_dump(mode="json")
            record["internal_id"] = new_id()
            records.append(record)
        try:
            ids = await self.ingest(records)
        except errors.StoreError:
            _metrics.EVENTS_REJECTED.labels("store_unavailable").inc(len(records))
            raise
        _metrics.EVENTS_ACCEPTED.inc(len(ids))
        return JSONResponse({"ids": ids, "status": 200})

    async def event_runs(self, request: Request) -> Response:
        runs = await self._store.runs_for_event(request.path_params["event_id"])
        return JSONResponse({"data": [run.to_api() for run in runs]})

    async def get_run(self, request: Request) -> Response:
        run = await self._store.get_run(request.path_params["run_id"])
        if run is None:
            return _error(404, f"no run {request.path_params['run_id']!r}")
        return JSONResponse(
            {"data": {**run.to_api(), "held": await flow.run_held(self._store, run)}}
        )

    async def run_steps(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if await self._store.get_run(run_id) is None:
            return _error(404, f"no run {run_id!r}")
        steps = await self._store.run_steps(run_id)
        deadlines = await self._store.step_deadlines(run_id)
        data = []
        for step in steps:
            row = step.to_api()
            # When a sleep or a wait in progress is due.
            row["deadline"] = iso(deadlines.get(step.hash)) if step.status == "Waiting" else None
            data.append(row)
        return JSONResponse({"data": data})

    async def signal(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, f"body is not valid JSON: {exc}")
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("signal"), str)
            or not body["signal"]
            or "\x00" in body["signal"]
        ):
            return _error(400, 'expected {"signal": "<name>", "data": ...}')
        run_id, applied = await self._store.resolve_signal(
            body["signal"], body.get("data"), _now_ms()
        )
        if run_id is None:
            return _error(404, f"no run waits on signal {body['signal']!r}")
        await self._dispatcher.publish(applied)
        return JSONResponse({"run_id": run_id})

    async def list_events(self, request: Request) -> Response:
        raw = request.query_params.get("limit", "100")
        if not is_count(raw) or int(raw) < 1:
            return _error(400, f"limit: expected a count from 1 (at most {MAX_LIST} are given)")
        limit = min(int(raw), MAX_LIST)
        events = await self._store.list_events(request.query_params.get("name"), limit)
        return JSONResponse({"data": await self.rest.summaries(events)})

    async def health(self, request: Request) -> Response:
        database, broker = await self._store.ping(), await self._broker.ping()
        status = 200 if database and broker else 503
        return JSONResponse({"database": database, "broker": broker}, status_code=status)

    async def metrics(self, request: Request) -> Response:
        return Response(
            prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
        )

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_spec())

    def routes(self) -> list[BaseRoute]:
        return [
            *self.rest.routes(),
            Route("/e/{event_key}", self.send_events, methods=["POST"]),
            Route("/v1/events", self.list_events, methods=["GET"]),
            Route("/v1/events/{event_id}/runs", self.event_runs, methods=["GET"]),
            Route("/v1/runs/{run_id}", self.get_run, methods=["GET"]),
            *self.cancellations.routes(),
            Route("/v1/runs/{run_id}/steps", self.run_steps, methods=["GET"]),
            Route("/v1/signals", self.signal, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            *realtime_routes(self._broker, self.settings),
        ]


_BAD = oa.problem("Not valid; `error` says what is wrong.")
_RUN_ID = oa.path_param("run_id", "A run's id.")
_EVENTS = {
    "anyOf": [
        {"$ref": oa.REF.format(model="EventIn")},
        {"type": "array", "items": {"$ref": oa.REF.format(model="EventIn")}},
    ]
}

OPERATIONS = (
    oa.Operation(
        "POST",
        "/e/{event_key}",
        "Sends one event or a JSON array of events",
        "events",
        {
            200: oa.json_answer("One id per event, in order (the engine's own ids).", sc.Ids),
            400: _BAD,
            401: oa.problem("The event key is not one of `TIDEFLOW_EVENT_KEY(S)`."),
            429: oa.Answer(
                "This event key sent more than `TIDEFLOW_EVENT_KEY_RATE` allows.",
                sc.Problem,
                headers={"retry-after": "Seconds to wait before sending again."},
            ),
        },
        params=(oa.path_param("event_key", "An event key (any key when none is set)."),),
        body=_EVENTS,
        auth="event_key",
    ),
    oa.Operation(
        "GET",
        "/v1/events",
        "Events, newest first",
        "events",
        {200: oa.json_answer("The events.", sc.EventList), 400: _BAD},
        params=(
            oa.Param("name", "query", "Only events of this name."),
            oa.Param(
                "limit",
                "query",
                f"At most this many (1..., {MAX_LIST} at most are given).",
                {"type": "integer", "minimum": 1},
            ),
        ),
    ),
    oa.Operation(
        "GET",
        "/v1/events/{event_id}/runs",
        "The runs an event started",
        "events",
        {200: oa.json_answer("The runs.", sc.RunList)},
        params=(oa.path_param("event_id", "The engine's id of the event."),),
    ),
    oa.Operation(
        "GET",
        "/v1/runs/{run_id}",
        "A run",
        "runs",
        {
            200: oa.json_answer("The run, with why it is held now, if it is.", sc.HeldRunAnswer),
            404: oa.problem("No such run."),
        },
        params=(_RUN_ID,),
    ),
    oa.Operation(
        "GET",
        "/v1/runs/{run_id}/steps",
        "A run's steps",
        "runs",
        {200: oa.json_answer("The steps.", sc.StepList), 404: oa.problem("No such run.")},
        params=(_RUN_ID,),
    ),
    oa.Operation(
        "POST",
        "/v1/signals",
        "Resumes the run waiting on a signal",
        "runs",
        {
            200: oa.json_answer("The resumed run.", sc.RunId),
            400: _BAD,
            404: oa.problem("No run waits on that signal."),
        },
        body=sc.Signal,
    ),
    oa.Operation(
        "GET",
        "/health",
        "Whether this process reaches its database and broker",
        "health",
        {
            200: oa.json_answer("Both are reachable.", sc.Health),
            503: oa.json_answer("One is not.", sc.Health),
        },
        auth="none",
    ),
    oa.Operation(
        "GET",
        "/metrics",
        "Prometheus metrics (closed like `/v1` when `TIDEFLOW_METRICS_AUTH` is set)",
        "health",
        {
            200: oa.Answer(
                "Prometheus text format.",
                {"type": "string"},
                media_type=prometheus_client.CONTENT_TYPE_LATEST.split(";")[0],
            )
        },
    ),
    oa.Operation(
        "GET",
        "/openapi.json",
        "This document",
        "health",
        {200: oa.json_answer("The OpenAPI 3.1 description of every route.", {"type": "object"})},
        auth="none",
    ),
)


def operations() -> tuple[oa.Operation, ...]:
    """Every route's declaration, in the order the routes are served."""
    return (
        *OPERATIONS,
        *_rest.OPERATIONS,
        *_cancellations.OPERATIONS,
        *_realtime.OPERATIONS,
        *_dashboard.OPERATIONS,
    )


@functools.cache
def _spec() -> dict[str, Any]:
    try:
        version = importlib.metadata.version("tideflow")
    except importlib.metadata.PackageNotFoundError:
        version = "0"
    return oa.build_document(
        operations(), version=version, bodies=[sc.EventIn], answers=[sc.RealtimeMessage]
    )


def openapi_spec() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the HTTP API, as `GET /openapi.json` serves it; no
    server needed."""
    spec: dict[str, Any] = json.loads(json.dumps(_spec()))
    return spec


class _Gate:
    """Closes `/v1` (and `/metrics` when so configured) to requests without the signing key,
    and counts each request as a sign of life of this process."""

    def __init__(self, app: ASGIApp, *, api: Api) -> None:
        self._app = app
        self._api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            auth = self._api.auth
            # The realtime routes check their own credentials: a subscription token, or a
            # publish signed with the signing key.
            is_v1 = path.startswith("/v1/") and not path.startswith("/v1/realtime")
            closed = is_v1 or (path == "/metrics" and auth.metrics_closed)
            if closed and not auth.allows(Request(scope)):
                response = _error(401, "missing or wrong signing key (Authorization: Bearer)")
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
            await self._api.beat()
        await self._app(scope, receive, send)


def create_app(api: Api) -> Starlette:
    async def store_down(request: Request, exc: Exception) -> Response:
        return _error(503, f"the database is unavailable: {exc}")

    dashboard = Dashboard(api.auth)
    app = Starlette(
        routes=[*api.routes(), *dashboard.routes()],
        exception_handlers={errors.StoreError: store_down},
        middleware=[
            Middleware(_metrics.RequestMetrics),
            Middleware(RequestLimits, max_body_bytes=api.settings.max_body_bytes),
            Middleware(_Gate, api=api),
        ],
    )
    dashboard.bind(app)
    return app
