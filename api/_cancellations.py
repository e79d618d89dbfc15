"""Cancelling through the API: one run (`DELETE /v1/runs/{id}`) or a function's runs in a
range of queued times (`POST /v1/cancellations`).

The API only asks: it leaves the request as a timer due at once, which a scheduler claims and
carries out (scheduler/_cancel_requests.py). A request row rather than a broker message, because
the timers table already gives what it needs: one replica claims it, a dead replica's claim
lapses to another, it outlives restarts of every process, and it costs no new queue or loop.
`DELETE` keeps its synchronous answer by watching the run until it has ended, for a while.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from tideflow import errors
from tideflow._core import expressions
from tideflow._core.ids import new_id
from tideflow.store import Store
from tideflow.store import models as m

from . import _openapi as oa
from . import _schemas as sc
from ._rest import BadRequestError, error, now_ms, parse_time
from ._time import iso

WAIT_FOR_SCHEDULER_S = 10.0
POLL_S = 0.05


def cancellation_to_api(record: m.CancellationRecord) -> dict[str, Any]:
    return {
        "id": record.cancellation_id,
        "status": record.status,
        "cancelled": record.cancelled,
        "function_id": record.function_id,
        "started_after": iso(record.started_after),
        "started_before": iso(record.started_before),
        "if_exp": record.if_exp,
        "created_at": iso(record.created_at),
    }


def _time_field(body: dict[str, Any], field: str) -> int:
    raw = body.get(field)
    if not isinstance(raw, str) or not raw:
        raise BadRequestError(f"{field}: expected an RFC 3339 time, e.g. 2026-01-01T00:00:00Z")
    return parse_time(raw, field)


def parse_bulk_request(body: Any) -> tuple[str, int, int, str | None]:
    """(function_id, started_after, started_before, if_exp) from a `POST /v1/cancellations`
    body; raises BadRequestError naming the field at fault."""
    if not isinstance(body, dict):
        raise BadRequestError(
            'expected {"function_id", "started_after", "started_before", "if_exp"?}'
        )
    function_id = body.get("function_id")
    if not isinstance(function_id, str) or not function_id:
        raise BadRequestError("function_id: expected a function id, e.g. my-app-my-fn")
    after, before = _time_field(body, "started_after"), _time_field(body, "started_before")
    if after >= before:
        raise BadRequestError("started_after must be earlier than started_before")
    if_exp = body.get("if_exp")
    if if_exp is not None:
        if not isinstance(if_exp, str):
            raise BadRequestError("if_exp: expected a CEL expression (a string) or null")
        try:
            expressions.compile_expression(if_exp)
            expressions.check_match_cost(if_exp)
        except errors.ExpressionError as exc:
            raise BadRequestError(f"if_exp: {exc}") from None
    return function_id, after, before, if_exp


def _has_ended(run: m.RunRecord) -> Response:
    return JSONResponse(
        {"error": f"run has already ended: {run.status}", "data": run.to_api()}, status_code=409
    )


class Cancellations:
    def __init__(self, *, store: Store, wait_s: float = WAIT_FOR_SCHEDULER_S) -> None:
        self._store = store
        self._wait_s = wait_s

    async def cancel_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        run = await self._store.get_run(run_id)
        if run is None:
            return error(404, f"no run {run_id!r}")
        if run.status in m.TERMINAL:
            return _has_ended(run)
        now = now_ms()
        await self._store.add_timers([m.TimerRecord(new_id(now), m.TIMER_CANCEL, run_id, "", now)])
        run = await self._until_ended(run)
        if run.status == m.CANCELLED:
            return JSONResponse({"data": run.to_api()})
        if run.status in m.TERMINAL:
            return _has_ended(run)
        # Asked, and the request stays: a scheduler will carry it out when one runs.
        return JSONResponse(
            {
                "error": "cancellation requested; no scheduler has carried it out yet",
                "data": run.to_api(),
            },
            status_code=202,
        )

    async def _until_ended(self, run: m.RunRecord) -> m.RunRecord:
        deadline = time.monotonic() + self._wait_s
        while run.status not in m.TERMINAL and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
            run = await self._store.get_run(run.run_id) or run
        return run

    async def create(self, request: Request) -> Response:
        try:
            function_id, after, before, if_exp = parse_bulk_request(await request.json())
        except ValueError as exc:  # BadRequestError, or a body that is not JSON
            return error(400, str(exc))
        known = {config["function_id"] for config in await self._store.list_functions()}
        if function_id not in known:
            return error(404, f"no function {function_id!r}")
        now = now_ms()
        record = m.CancellationRecord(
            cancellation_id=new_id(now),
            function_id=function_id,
            started_after=after,
            started_before=before,
            if_exp=if_exp,
            created_at=now,
            # The cursor starts before every run queued at `started_after`: no id sorts before ''.
            cursor_at=after,
            cursor_id="",
        )
        timer = m.TimerRecord(new_id(now), m.TIMER_BULK_CANCEL, record.cancellation_id, "", now)
        await self._store.create_cancellation(record, timer)
        return JSONResponse({"id": record.cancellation_id}, status_code=202)

    async def get(self, request: Request) -> Response:
        cancellation_id = request.path_params["cancellation_id"]
        record = await self._store.get_cancellation(cancellation_id)
        if record is None:
            return error(404, f"no cancellation {cancellation_id!r}")
        return JSONResponse({"data": cancellation_to_api(record)})

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/v1/runs/{run_id}", self.cancel_run, methods=["DELETE"]),
            Route("/v1/cancellations", self.create, methods=["POST"]),
            Route("/v1/cancellations/{cancellation_id}", self.get, methods=["GET"]),
        ]


OPERATIONS = (
    oa.Operation(
        "DELETE",
        "/v1/runs/{run_id}",
        "Cancels a run",
        "runs",
        {
            200: oa.json_answer("The run, `Cancelled`.", sc.RunAnswer),
            202: oa.json_answer("Asked; no scheduler has carried it out yet.", sc.RunConflict),
            404: oa.problem("No such run."),
            409: oa.json_answer("The run had already ended; it is left as it is.", sc.RunConflict),
        },
        params=(oa.path_param("run_id", "A run's id."),),
    ),
    oa.Operation(
        "POST",
        "/v1/cancellations",
        "Cancels a function's runs queued in a time range (bulk)",
        "runs",
        {
            202: oa.json_answer("The bulk cancellation's id.", sc.CancellationId),
            400: oa.problem("A field is missing or wrong; `error` names it."),
            404: oa.problem("No such function."),
        },
        body=sc.CancellationRequest,
    ),
    oa.Operation(
        "GET",
        "/v1/cancellations/{cancellation_id}",
        "A bulk cancellation's progress",
        "runs",
        {
            200: oa.json_answer("The cancellation.", sc.CancellationAnswer),
            404: oa.problem("No such cancellation."),
        },
        params=(oa.path_param("cancellation_id", "The id `POST /v1/cancellations` answered."),),
    ),
)
