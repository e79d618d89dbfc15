"""The HTTP API: event ingest, runs and steps, signals, health."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import prometheus_client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from tideflow import Settings, errors
from tideflow import _event as ev
from tideflow._core import system_events
from tideflow._core.ids import new_id
from tideflow._core.protocol import ErrorInfo
from tideflow.broker import Broker, Dispatcher, Seal, publish_events
from tideflow.store import Store
from tideflow.store import models as m

from ._realtime import realtime_routes

logger = logging.getLogger(__name__)

MAX_LIST = 1000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Api:
    def __init__(self, *, store: Store, broker: Broker, settings: Settings) -> None:
        self._store = store
        self._broker = broker
        self._settings = settings
        self._dispatcher = Dispatcher(broker, Seal(settings.signing_key))

    async def ingest(self, records: list[dict[str, Any]]) -> list[str]:
        """Stores validated event records, then announces them; returns their ids."""
        now = _now_ms()
        events = [m.EventRecord.from_wire(item, now) for item in records]
        await self._store.insert_events(events)
        try:
            await publish_events(self._broker, [event.wire() for event in events])
        except errors.BrokerError as exc:
            # The events are stored: the scheduler's sweeper picks them up.
            logger.warning("events stored but not announced: %s", exc)
        return [event.internal_id for event in events]

    async def send_events(self, request: Request) -> Response:
        key = request.path_params["event_key"]
        if self._settings.event_key is not None and key != self._settings.event_key:
            return _error(401, "invalid event key")
        try:
            payload = json.loads(await request.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, f"body is not valid JSON: {exc}")
        try:
            events = ev.parse_events(payload)
        except errors.EventError as exc:
            return _error(400, str(exc))
        records = []
        for event in events:
            record = event.model_dump(mode="json")
            record["internal_id"] = new_id()
            records.append(record)
        ids = await self.ingest(records)
        return JSONResponse({"ids": ids, "status": 200})

    async def event_runs(self, request: Request) -> Response:
        runs = await self._store.runs_for_event(request.path_params["event_id"])
        return JSONResponse({"data": [run.to_api() for run in runs]})

    async def get_run(self, request: Request) -> Response:
        run = await self._store.get_run(request.path_params["run_id"])
        if run is None:
            return _error(404, f"no run {request.path_params['run_id']!r}")
        return JSONResponse({"data": run.to_api()})

    async def cancel_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = await self._store.get_run(run_id)
        if run is None:
            return _error(404, f"no run {run_id!r}")
        now = _now_ms()
        error = ErrorInfo("Cancelled", "cancelled through the API (api)")
        event = m.EventRecord.about_run(
            system_events.CANCELLED_EVENT, run, now, error=error.to_dict()
        )
        run, applied = await self._store.cancel_run(run_id, [event], error, now)
        assert run is not None
        if not applied.done:
            return JSONResponse(
                {"error": f"run has already ended: {run.status}", "data": run.to_api()},
                status_code=409,
            )
        await self._dispatcher.publish(applied)
        return JSONResponse({"data": run.to_api()})

    async def run_steps(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if await self._store.get_run(run_id) is None:
            return _error(404, f"no run {run_id!r}")
        steps = await self._store.run_steps(run_id)
        return JSONResponse({"data": [step.to_api() for step in steps]})

    async def signal(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return _error(400, f"body is not valid JSON: {exc}")
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("signal"), str)
            or not body["signal"]
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
        try:
            limit = min(int(request.query_params.get("limit", "100")), MAX_LIST)
        except ValueError:
            return _error(400, "limit must be an integer")
        events = await self._store.list_events(request.query_params.get("name"), limit)
        return JSONResponse({"data": [event.to_api() for event in events]})

    async def health(self, request: Request) -> Response:
        database, broker = await self._store.ping(), await self._broker.ping()
        status = 200 if database and broker else 503
        return JSONResponse({"database": database, "broker": broker}, status_code=status)

    async def metrics(self, request: Request) -> Response:
        return Response(
            prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST
        )

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/e/{event_key}", self.send_events, methods=["POST"]),
            Route("/v1/events", self.list_events, methods=["GET"]),
            Route("/v1/events/{event_id}/runs", self.event_runs, methods=["GET"]),
            Route("/v1/runs/{run_id}", self.get_run, methods=["GET"]),
            Route("/v1/runs/{run_id}", self.cancel_run, methods=["DELETE"]),
            Route("/v1/runs/{run_id}/steps", self.run_steps, methods=["GET"]),
            Route("/v1/signals", self.signal, methods=["POST"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            *realtime_routes(self._broker, self._settings),
        ]


def create_app(api: Api) -> Starlette:
    async def store_down(request: Request, exc: Exception) -> Response:
        return _error(503, f"the database is unavailable: {exc}")

    return Starlette(routes=api.routes(), exception_handlers={errors.StoreError: store_down})
