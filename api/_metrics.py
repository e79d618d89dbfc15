"""The API's Prometheus metrics. Labels are bounded: a rejection reason from a fixed set, a
route template (never a path with ids in it), a method and a status code."""

from __future__ import annotations

import time

import prometheus_client
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EVENTS_RECEIVED = prometheus_client.Counter(
    "tideflow_api_events_received_total",
    "Events posted to the API (a body that cannot be read counts as one).",
)
EVENTS_ACCEPTED = prometheus_client.Counter(
    "tideflow_api_events_accepted_total", "Events the API stored and announced."
)
EVENTS_REJECTED = prometheus_client.Counter(
    "tideflow_api_events_rejected_total",
    "Events the API refused, by reason.",
    ["reason"],
)
REJECT_REASONS = (
    "invalid_key",
    "invalid_json",
    "invalid_event",
    "store_unavailable",
    "rate_limited",
)
for _reason in REJECT_REASONS:
    EVENTS_REJECTED.labels(_reason)

REQUEST_SECONDS = prometheus_client.Histogram(
    "tideflow_api_request_duration_seconds",
    "Time to answer an HTTP request, by route template, method and status code.",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class RequestMetrics:
    """ASGI middleware timing each request under its route's template (`/v1/runs/{run_id}`),
    so that ids never become label values."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            template = route.path if isinstance(route, Route) else "unmatched"
            REQUEST_SECONDS.labels(template, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )
