"""The REST routes the dashboard is built on: runs by cursor, rerun, functions and invoke,
one event with what became of it, processes and queues, and a stream of changes (SSE)."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from tideflow import _event as ev
from tideflow import errors
from tideflow._core import system_events
from tideflow._core.ids import derived_id, new_id
from tideflow.broker import Broker, publish_events
from tideflow.store import Store, views
from tideflow.store import models as m

from . import _flow as flow
from . import _openapi as oa
from . import _schemas as sc
from ._time import iso

logger = logging.getLogger(__name__)

DEFAULT_PAGE, MAX_PAGE = 50, 200
STATUSES = (m.QUEUED, m.RUNNING, m.COMPLETED, m.FAILED, m.CANCELLED)
PROCESS_SEEN_S = 60
STATS_WINDOW_MS = 24 * 3600 * 1000
# An SSE connection ends after this long and the browser reconnects at once: a server that
# is shutting down is not held open by dashboards left open.
STREAM_LIFETIME_S = 20.0
_FAR_FUTURE_MS = 2**62


class BadRequestError(ValueError):
    pass


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def now_ms() -> int:
    return int(time.time() * 1000)


def is_count(raw: str) -> bool:
    """ASCII digits only: `str.isdigit` also takes digits `int` cannot read ("²")."""
    return raw.isascii() and raw.isdigit()


def parse_time(raw: str, field: str) -> int:
    """Milliseconds since the epoch, from an RFC 3339 time with its offset, or from ms."""
    if is_count(raw):
        return int(raw)
    try:
        moment = datetime.datetime.fromisoformat(raw)
    except ValueError:
        raise BadRequestError(f"{field}: {raw!r} is not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise BadRequestError(f"{field}: {raw!r} has no UTC offset (add 'Z' or '+00:00')")
    return int(moment.timestamp() * 1000)


def encode_cursor(run: m.RunRecord) -> str:
    return f"{run.queued_at}-{run.run_id}"


def decode_cursor(raw: str) -> views.RunPage:
    at, _, run_id = raw.partition("-")
    if not is_count(at) or not run_id:
        raise BadRequestError(f"cursor: {raw!r} is not a cursor this API gave")
    return views.RunPage(int(at), run_id)


def event_summary(event: m.EventRecord, state: views.EventState | None) -> dict[str, Any]:
    """An event as the API shows it, with what became of it: `pending` (not processed yet),
    `duplicate`, `started` (see `run_ids`) or `no function matched`."""
    summary = event.to_api()
    summary["received_at"] = iso(event.received_at)
    if state is None or not state.processed:
        status = "pending"
    elif state.duplicate:
        status = "duplicate"
    elif state.run_ids:
        status = "started"
    else:
        status = "no function matched"
    summary["status"] = status
    summary["run_ids"] = list(state.run_ids) if state else []
    return summary


def _json_body(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from None


Handler = Callable[[Request], Awaitable[Response]]


def _answers_bad_requests(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except BadRequestError as exc:
            return error(400, str(exc))

    return wrapped


class Rest:
    def __init__(self, *, store: Store, broker: Broker, stream_poll_s: float = 1.0) -> None:
        self._store = store
        self._broker = broker
        self._stream_poll_s = stream_poll_s

    async def announce(self, events: Sequence[m.EventRecord]) -> None:
        """Stores events, then publishes them to the scheduler."""
        await self._store.insert_events(events)
        try:
            await publish_events(self._broker, [event.wire() for event in events])
        except errors.BrokerError as exc:
            # The events are stored: the scheduler's sweeper picks them up.
            logger.warning("events stored but not announced: %s", exc)

    # Runs

    async def list_runs(self, request: Request) -> Response:
        query = request.query_params
        limit = _limit(query.get("limit"))
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise BadRequestError(f"status: {status!r} is not one of {list(STATUSES)}")
        page = views.RunPage(_FAR_FUTURE_MS, "")
        if query.get("cursor"):
            page = decode_cursor(query["cursor"])
        if query.get("to"):
            # `to` is exclusive: runs queued strictly before it, as if a page ended there.
            page = min(page, views.RunPage(parse_time(query["to"], "to"), ""), key=_page_key)
        from_ms = parse_time(query["from"], "from") if query.get("from") else 0
        runs = await self._store.list_runs(
            page=page,
            limit=limit + 1,
            function_id=query.get("function_id") or None,
            status=status,
            from_ms=from_ms,
        )
        cursor = encode_cursor(runs[limit - 1]) if len(runs) > limit else None
        return JSONResponse({"data": [run.to_api() for run in runs[:limit]], "cursor": cursor})

    async def rerun(self, request: Request) -> Response:
        run = await self._store.get_run(request.path_params["run_id"])
        if run is None:
            return error(404, f"no run {request.path_params['run_id']!r}")
        if await self._function(run.function_id) is None:
            return error(404, f"function {run.function_id!r} is no longer registered")
        original = run.events[0]
        now = now_ms()
        # Addressed to the one function, and without the original's `id`: as a deduplication
        # key it would make the copy a duplicate that starts nothing.
        event = m.EventRecord(
            internal_id=new_id(now),
            name=original["name"],
            data=original.get("data"),
            ts=now,
            user=original.get("user"),
            v=original.get("v"),
            received_at=now,
            target={"function_id": run.function_id, "parent": None, "rerun_of": run.run_id},
        )
        await self.announce([event])
        return JSONResponse({"run_id": derived_id(event.internal_id, run.function_id)})

    # Functions

    async def list_functions(self, request: Request) -> Response:
        configs = await self._store.list_functions()
        counts = await self._store.function_run_counts(now_ms() - STATS_WINDOW_MS)
        data = [
            {
                "function_id": config["function_id"],
                "app_id": config["app_id"],
                "name": config.get("name") or config["function_id"],
                "triggers": config.get("triggers", []),
                "config": config,
                "runs_24h": counts.get(config["function_id"], {}),
            }
            for config in configs
        ]
        return JSONResponse({"data": data})

    async def invoke(self, request: Request) -> Response:
        function_id = request.path_params["function_id"]
        body = _json_body(await request.body())
        data = body.get("data", {}) if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise BadRequestError('expected {"data": {...}} (data: a JSON object)')
        if await self._function(function_id) is None:
            return error(404, f"no function {function_id!r} is registered")
        now = now_ms()
        event = m.EventRecord(
            internal_id=new_id(now),
            name=system_events.INVOKED_EVENT,
            data=data,
            ts=now,
            received_at=now,
            target={"function_id": function_id, "parent": None},
        )
        await self.announce([event])
        # The scheduler derives the run's id from these two, so it is known at once.
        return JSONResponse({"run_id": derived_id(event.internal_id, function_id)})

    async def _function(self, function_id: str) -> dict[str, Any] | None:
        configs = await self._store.list_functions()
        return next((c for c in configs if c["function_id"] == function_id), None)

    # Events

    async def send_events(self, request: Request) -> Response:
        """`POST /e` for holders of the signing key (the dashboard's test events)."""
        try:
            events = ev.parse_events(_json_body(await request.body()))
        except errors.EventError as exc:
            raise BadRequestError(str(exc)) from None
        now = now_ms()
        records = [
            m.EventRecord.from_wire({**e.model_dump(mode="json"), "internal_id": new_id(now)}, now)
            for e in events
        ]
        await self.announce(records)
        return JSONResponse({"ids": [record.internal_id for record in records], "status": 200})

    async def get_event(self, request: Request) -> Response:
        event_id = request.path_params["event_id"]
        event = await self._store.get_event(event_id)
        if event is None:
            return error(404, f"no event {event_id!r}")
        state = (await self._store.event_states([event_id])).get(event_id)
        summary = event_summary(event, state)
        configs = await self._store.list_functions()
        summary["not_started"] = await flow.not_started(self._store, event, state, configs)
        return JSONResponse({"data": summary})

    async def summaries(self, events: Sequence[m.EventRecord]) -> list[dict[str, Any]]:
        states = await self._store.event_states([event.internal_id for event in events])
        return [event_summary(event, states.get(event.internal_id)) for event in events]

    # Health

    async def processes(self, request: Request) -> Response:
        now = now_ms()
        seen = await self._store.list_processes(now - PROCESS_SEEN_S * 1000)
        data = [
            {
                "process_id": p.process_id,
                "kind": p.kind,
                "app_ids": list(p.app_ids),
                "started_at": iso(p.started_at),
                "last_seen_at": iso(p.seen_at),
                "heartbeat_age_s": round(max(0, now - p.seen_at) / 1000, 1),
            }
            for p in seen
        ]
        return JSONResponse({"data": data})

    async def queues(self, request: Request) -> Response:
        depths = await self._store.queue_depths()
        return JSONResponse(
            {
                "data": {
                    "jobs_queued": depths.jobs_by_app,
                    "events_unprocessed": depths.unprocessed_events,
                }
            }
        )

    # Live updates

    async def stream(self, request: Request) -> Response:
        """Server-Sent Events: a `change` message whenever the watched runs change (one run
        with `run_id`, else the newest runs). `limit=N` ends the stream after N messages."""
        run_id = request.query_params.get("run_id") or None
        raw_limit = request.query_params.get("limit", "0")
        if not is_count(raw_limit):
            raise BadRequestError(f"limit: expected a count, got {raw_limit!r}")
        limit = int(raw_limit)
        return StreamingResponse(
            self._changes(run_id, limit),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _changes(self, run_id: str | None, limit: int) -> AsyncIterator[str]:
        yield "retry: 1000\n\n"
        deadline = time.monotonic() + STREAM_LIFETIME_S
        last: Any = None
        sent = 0
        while time.monotonic() < deadline:
            snapshot = await self._snapshot(run_id)
            if snapshot != last:
                last = snapshot
                yield f"event: change\ndata: {json.dumps(snapshot)}\n\n"
                sent += 1
                if limit and sent >= limit:
                    return
            await asyncio.sleep(self._stream_poll_s)

    async def _snapshot(self, run_id: str | None) -> Any:
        if run_id is not None:
            run = await self._store.get_run(run_id)
            if run is None:
                return None
            steps = await self._store.run_steps(run_id)
            return {
                "run": run.to_api(),
                "steps": [[step.hash, step.status, step.attempt] for step in steps],
            }
        runs = await self._store.list_runs(page=views.RunPage(_FAR_FUTURE_MS, ""), limit=20)
        # Events that start no run change the events page too: the newest, and the backlog.
        newest = await self._store.list_events(None, 1)
        depths = await self._store.queue_depths()
        return {
            "runs": [[run.run_id, run.status] for run in runs],
            "newest_event": newest[0].internal_id if newest else None,
            "unprocessed_events": depths.unprocessed_events,
        }

    def routes(self) -> list[Route]:
        def route(path: str, handler: Handler, method: str) -> Route:
            return Route(path, _answers_bad_requests(handler), methods=[method])

        return [
            route("/v1/runs", self.list_runs, "GET"),
            route("/v1/runs/{run_id}/rerun", self.rerun, "POST"),
            route("/v1/functions", self.list_functions, "GET"),
            route("/v1/functions/{function_id}/invoke", self.invoke, "POST"),
            route("/v1/events", self.send_events, "POST"),
            route("/v1/events/{event_id}", self.get_event, "GET"),
            route("/v1/processes", self.processes, "GET"),
            route("/v1/queues", self.queues, "GET"),
            route("/v1/stream", self.stream, "GET"),
        ]


def _page_key(page: views.RunPage) -> tuple[int, str]:
    return (page.before_at, page.before_id)


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_PAGE
    if not is_count(raw) or not 1 <= int(raw) <= MAX_PAGE:
        raise BadRequestError(f"limit: expected 1..{MAX_PAGE}, got {raw!r}")
    return int(raw)


_BAD = oa.problem("A parameter or the body is not valid; `error` names it.")
_RUN_ID = oa.path_param("run_id", "A run's id.")


def _query(name: str, description: str, **schema: Any) -> oa.Param:
    return oa.Param(name, "query", description, schema or {"type": "string"})


OPERATIONS = (
    oa.Operation(
        "GET",
        "/v1/runs",
        "Runs, newest first, cursor-paginated",
        "runs",
        {200: oa.json_answer("A page of runs.", sc.RunPage), 400: _BAD},
        params=(
            _query("function_id", "Only this function's runs."),
            _query("status", "Only runs in this status.", enum=list(STATUSES)),
            _query("from", "Runs queued at or after this RFC 3339 time (or ms)."),
            _query("to", "Runs queued before this RFC 3339 time (or ms)."),
            _query("cursor", "The `cursor` of the previous page."),
            _query("limit", f"Runs a page, 1..{MAX_PAGE}.", type="integer", minimum=1),
        ),
    ),
    oa.Operation(
        "POST",
        "/v1/runs/{run_id}/rerun",
        "Starts a new run of the same function with the same event",
        "runs",
        {
            200: oa.json_answer("The new run's id.", sc.RunId),
            404: oa.problem("No such run, or its function is no longer registered."),
        },
        params=(_RUN_ID,),
    ),
    oa.Operation(
        "GET",
        "/v1/functions",
        "The registered functions",
        "functions",
        {200: oa.json_answer("Every registered function.", sc.FunctionList)},
    ),
    oa.Operation(
        "POST",
        "/v1/functions/{function_id}/invoke",
        "Starts a run of a function with this data",
        "functions",
        {
            200: oa.json_answer("The run's id.", sc.RunId),
            400: _BAD,
            404: oa.problem("No such function is registered."),
        },
        params=(oa.path_param("function_id", "`<app_id>-<fn_id>`"),),
        body=sc.Invoke,
    ),
    oa.Operation(
        "POST",
        "/v1/events",
        "Sends events (for holders of the signing key, as the dashboard does)",
        "events",
        {200: oa.json_answer("One id per event, in order.", sc.Ids), 400: _BAD},
        body={
            "anyOf": [
                {"$ref": oa.REF.format(model="EventIn")},
                {"type": "array", "items": {"$ref": oa.REF.format(model="EventIn")}},
            ]
        },
    ),
    oa.Operation(
        "GET",
        "/v1/events/{event_id}",
        "One event and what became of it",
        "events",
        {200: oa.json_answer("The event.", sc.EventAnswer), 404: oa.problem("No such event.")},
        params=(oa.path_param("event_id", "The engine's id of the event."),),
    ),
    oa.Operation(
        "GET",
        "/v1/processes",
        "Processes seen in the last minute",
        "health",
        {200: oa.json_answer("The processes.", sc.ProcessList)},
    ),
    oa.Operation(
        "GET",
        "/v1/queues",
        "Queued step jobs by app and unprocessed events",
        "health",
        {200: oa.json_answer("Queue depths.", sc.QueueAnswer)},
    ),
    oa.Operation(
        "GET",
        "/v1/stream",
        "Server-Sent Events: a `change` event whenever the watched runs change",
        "runs",
        {
            200: oa.Answer(
                "An event stream (`event: change`), ended after 20 s or `limit` messages.",
                {"type": "string"},
                media_type="text/event-stream",
            ),
            400: _BAD,
        },
        params=(
            _query("run_id", "Watch this run (else the newest runs)."),
            _query("limit", "End the stream after this many messages.", type="integer", minimum=0),
        ),
        extensions={"x-stream": "sse"},
    ),
)
