"""Limits that protect the API process: the request body size (every route), URLs the store
cannot hold, and the events each event key may send per period.

The event-key limiter lives in this process's memory: with N API replicas behind a balancer a
key gets up to N times its rate. That is the trade operators of a stateless HTTP tier expect (no
store round trip on the hot ingest path); a shared limit belongs in the balancer.
"""

from __future__ import annotations

import math
import time
import urllib.parse
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tideflow._settings import Rate

_MAX_KEYS = 10_000
"""Keys tracked before idle ones are forgotten (a forgotten key starts again with a full
bucket, which is what an idle key has anyway)."""


class _BodyTooLargeError(Exception):
    pass


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


class RequestLimits:
    """ASGI middleware: 413 for a body over `max_body_bytes` (by its Content-Length, or counted
    as it is read when it has none), 400 for a URL with a NUL character (no id holds one, and
    PostgreSQL text cannot)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self._app = app
        self._max = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        query = urllib.parse.unquote_to_bytes(scope.get("query_string", b""))
        if "\x00" in scope["path"] or b"\x00" in query:
            await _problem(400, "a URL cannot hold NUL characters")(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self._max:
            await self._too_large()(scope, receive, send)
            return
        await self._counting(scope, receive, send)

    def _too_large(self) -> JSONResponse:
        return _problem(
            413, f"the request body is over {self._max} bytes (TIDEFLOW_MAX_BODY_BYTES)"
        )

    async def _counting(self, scope: Scope, receive: Receive, send: Send) -> None:
        read = 0
        started = False

        async def counted() -> Message:
            nonlocal read
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > self._max:
                    raise _BodyTooLargeError
            return message

        async def noted(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self._app(scope, counted, noted)
        except _BodyTooLargeError:
            if started:
                raise
            await self._too_large()(scope, receive, send)


class EventKeyLimiter:
    """A token bucket per event key holding one period's worth of events. A send is admitted
    while the bucket holds at least as many events as it carries, or is full: a send larger
    than the bucket then leaves it in debt, so a key never stalls on its own batch size."""

    def __init__(self, rate: Rate, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._capacity = float(rate.limit)
        self._per_s = rate.limit * 1000 / rate.period_ms
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        """key -> (events available, at)"""

    def admit(self, key: str, events: int) -> float | None:
        """None when `events` may pass now (and takes them), else the seconds to wait."""
        now = self._clock()
        available = self._available(key, now)
        # The tolerance absorbs float error in refills that land exactly on the need.
        if available + 1e-9 >= min(events, self._capacity):
            self._remember(key, available - events, now)
            return None
        return (min(events, self._capacity) - available) / self._per_s

    def _available(self, key: str, now: float) -> float:
        tokens, at = self._buckets.get(key, (self._capacity, now))
        return min(self._capacity, tokens + (now - at) * self._per_s)

    def _remember(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= _MAX_KEYS:
            full = [k for k in self._buckets if self._available(k, now) >= self._capacity]
            for idle in full or list(self._buckets)[: _MAX_KEYS // 10]:
                del self._buckets[idle]
        self._buckets[key] = (tokens, now)


def retry_after(wait_s: float) -> str:
    """A Retry-After value: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
