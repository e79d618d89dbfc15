"""The offload loop: makes the requests of offloaded steps (`step.fetch`, `step.ai.infer`) for
the runs of a worker's apps, and reports what they came to.

It runs inside `tideflow worker` (and so `tideflow dev`): no process to deploy, and workers are
already scaled to their apps' load. It takes requests from its apps' offload queues, apart from
step jobs, so a slow request holds no job slot; `TIDEFLOW_FETCH_CONCURRENCY` bounds the requests
in flight (one pooled HTTP client). A request is acked once its result is published: a worker
killed mid-request leaves it to be delivered again (at least once); the scheduler records the
first result only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from tideflow import Settings, errors
from tideflow._core import protocol, sealing
from tideflow._core.backoff import Backoff, pause
from tideflow._core.protocol import ErrorInfo
from tideflow._core.replay import MAX_STEP_OUTPUT_BYTES
from tideflow.broker import Broker, Delivery, Seal, decode_offload, offloaded_message, topology

from . import _metrics

logger = logging.getLogger(__name__)

_RETRY_S = 0.2
_RETRY_CAP_S = 5.0


class _Refused(Exception):
    """A request to a host `TIDEFLOW_FETCH_ALLOW` does not list (a redirect's, too)."""


class _Failure(Exception):
    def __init__(self, error: ErrorInfo, *, is_retriable: bool) -> None:
        super().__init__(error.message)
        self.error = error
        self.is_retriable = is_retriable


class Offloader:
    """Makes offloaded requests for the runs of `apps`.

    Args:
        environ: where API keys an adapter names by variable are read.
    """

    def __init__(
        self,
        *,
        broker: Broker,
        settings: Settings,
        apps: Sequence[str],
        environ: Mapping[str, str],
    ) -> None:
        self._broker = broker
        self._apps = list(apps)
        self._environ = environ
        self._allow = settings.fetch_allow
        self._concurrency = settings.fetch_concurrency
        self._seal = Seal(settings.signing_key)
        self._signing_key = settings.signing_key
        self._slots = asyncio.Semaphore(self._concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def declare(self) -> None:
        for app_id in self._apps:
            await self._broker.declare_queue(
                topology.offload_queue(app_id),
                exchange=topology.INTERNAL_EXCHANGE,
                routing_keys=[topology.offload_key(app_id)],
            )

    async def run(self) -> None:
        """Makes requests until cancelled; those in flight then go back to their queue."""
        limits = httpx.Limits(
            max_connections=self._concurrency, max_keepalive_connections=self._concurrency
        )
        async with httpx.AsyncClient(
            limits=limits, follow_redirects=True, event_hooks={"request": [self._check_host]}
        ) as http:
            consumers = [
                asyncio.create_task(self._consume(http, app), name=f"tideflow-offload-{app}")
                for app in self._apps
            ]
            try:
                await asyncio.gather(*consumers)
            finally:
                for task in consumers:
                    task.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*consumers, *self._tasks, return_exceptions=True)

    async def _consume(self, http: httpx.AsyncClient, app_id: str) -> None:
        backoff = Backoff(base_s=_RETRY_S, cap_s=_RETRY_CAP_S)
        while True:
            try:
                async for delivery in self._broker.consume(
                    topology.offload_queue(app_id), prefetch=self._concurrency
                ):
                    backoff.reset()
                    await self._slots.acquire()
                    task = asyncio.create_task(self._handle(http, delivery), name="tideflow-fetch")
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                    task.add_done_callback(lambda _: self._slots.release())
                return
            except errors.BrokerError as exc:
                await pause(backoff, logger, f"consuming offloaded requests of {app_id}", exc)

    async def _handle(self, http: httpx.AsyncClient, delivery: Delivery) -> None:
        try:
            job = decode_offload(delivery.body, self._seal)
        except (ValueError, TypeError, errors.SignatureError) as exc:
            await delivery.dead_letter(f"not an offloaded request: {exc}")
            return
        try:
            result = await self.perform(http, job)
            await self._broker.publish([offloaded_message(result, self._seal)])
        except errors.BrokerError as exc:
            logger.warning("could not report offloaded step %s (%s); retrying", job.name, exc)
            await delivery.requeue()
            return
        except asyncio.CancelledError:
            # Shutting down: the request is made again by whoever gets it next.
            await asyncio.shield(delivery.requeue())
            raise
        await delivery.ack()

    async def perform(
        self, http: httpx.AsyncClient, job: protocol.OffloadJob
    ) -> protocol.OffloadResult:
        """Makes `job`'s request; what it came to."""
        try:
            with _metrics.OFFLOADED_IN_FLIGHT.track_inprogress():
                if isinstance(job.ask, protocol.Fetch):
                    output = await self._fetch(http, job.ask)
                else:
                    output = await self._infer(http, job.ask)
        except _Failure as failure:
            result = "attempt_failed" if failure.is_retriable else "refused"
            _metrics.OFFLOADED.labels(job.ask.op, result).inc()
            return job.result(error=failure.error, is_retriable=failure.is_retriable)
        except Exception as exc:  # a request this loop cannot make must not stay unanswered
            logger.exception("offloaded step %s of run %s failed", job.name, job.run_id)
            _metrics.OFFLOADED.labels(job.ask.op, "refused").inc()
            return job.result(error=ErrorInfo.from_exception(exc))
        _metrics.OFFLOADED.labels(job.ask.op, "ok").inc()
        return job.result(output)

    async def _fetch(self, http: httpx.AsyncClient, ask: protocol.Fetch) -> Any:
        headers = dict(ask.headers)
        content: bytes | None = None
        if isinstance(ask.body, str):
            content = ask.body.encode()
        elif ask.body is not None:
            content = json.dumps(ask.body, separators=(",", ":")).encode()
            if not any(name.lower() == "content-type" for name in headers):
                headers["Content-Type"] = "application/json"
        response, raw = await self._send(
            http, ask.method, ask.url, headers, content, ask.timeout_ms
        )
        if response.status_code >= 500:
            raise _Failure(
                ErrorInfo("FetchServerError", f"{_shown(ask.url)} answered {response.status_code}"),
                is_retriable=True,
            )
        output = {
            "status": response.status_code,
            "headers": dict(response.headers.items()),
            "body": _decoded(response, raw),
        }
        return _checked(output)

    async def _infer(self, http: httpx.AsyncClient, ask: protocol.AiInfer) -> Any:
        try:
            key = (
                sealing.open_key(ask.api_key, self._signing_key)
                if ask.api_key
                else (self._environ.get(ask.api_key_env) if ask.api_key_env else None)
            )
        except errors.SignatureError as exc:
            raise _Failure(ErrorInfo("FetchError", str(exc)), is_retriable=False) from None
        if not key:
            raise _Failure(
                ErrorInfo(
                    "FetchError",
                    f"no API key for {ask.provider}: give the adapter api_key, or set "
                    f"{ask.api_key_env} where tideflow workers run",
                ),
                is_retriable=False,
            )
        headers = {**ask.headers, "Content-Type": "application/json"}
        if ask.provider == "anthropic":
            headers["x-api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
        content = json.dumps(ask.body, separators=(",", ":")).encode()
        response, raw = await self._send(http, "POST", ask.url, headers, content, ask.timeout_ms)
        status = response.status_code
        if status == 429 or status >= 500:
            raise _Failure(
                ErrorInfo("AiInferError", f"{ask.provider} answered {status}"), is_retriable=True
            )
        body = _decoded(response, raw)
        if status >= 400 or not isinstance(body, dict):
            detail = json.dumps(body)[:2000] if not isinstance(body, str) else body[:2000]
            raise _Failure(
                ErrorInfo("AiInferError", f"{ask.provider} answered {status}: {detail}"),
                is_retriable=False,
            )
        return _checked(body)

    async def _send(
        self,
        http: httpx.AsyncClient,
        method: str,
        url: str,
        headers: dict[str, str],
        content: bytes | None,
        timeout_ms: int,
    ) -> tuple[httpx.Response, bytes]:
        shown = _shown(url)
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                request = http.build_request(
                    method, url, headers=headers, content=content, timeout=timeout_ms / 1000
                )
                response = await http.send(request, stream=True)
                try:
                    raw = await _read_capped(response)
                finally:
                    await response.aclose()
        except _Refused as exc:
            raise _Failure(ErrorInfo("FetchError", str(exc)), is_retriable=False) from None
        except (TimeoutError, httpx.TimeoutException):
            error = ErrorInfo("FetchTimeoutError", f"{shown} took over {timeout_ms} ms")
            raise _Failure(error, is_retriable=True) from None
        except httpx.HTTPError as exc:
            error = ErrorInfo("FetchNetworkError", f"{shown}: {type(exc).__name__}: {exc}")
            raise _Failure(error, is_retriable=True) from None
        logger.debug("offloaded %s %s answered %d", method, shown, response.status_code)
        return response, raw

    async def _check_host(self, request: httpx.Request) -> None:
        if not self._allow:
            return
        host = request.url.host.lower()
        port = request.url.port or (443 if request.url.scheme == "https" else 80)
        for allowed in self._allow:
            name, _, allowed_port = allowed.partition(":")
            if allowed_port and allowed_port != str(port):
                continue
            if host == name or (name.startswith("*.") and host.endswith(name[1:])):
                return
        raise _Refused(f"host {host!r} is not in TIDEFLOW_FETCH_ALLOW")


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_STEP_OUTPUT_BYTES:
            raise _Failure(_too_large(f"over {MAX_STEP_OUTPUT_BYTES} bytes"), is_retriable=False)
        chunks.append(chunk)
    return b"".join(chunks)


def _decoded(response: httpx.Response, raw: bytes) -> Any:
    text = raw.decode(response.encoding or "utf-8", errors="replace")
    if "json" in response.headers.get("content-type", ""):
        with contextlib.suppress(ValueError):
            return json.loads(text)
    return text


def _checked(output: Any) -> Any:
    size = len(json.dumps(output, separators=(",", ":")).encode())
    if size > MAX_STEP_OUTPUT_BYTES:
        raise _Failure(_too_large(f"{size} bytes"), is_retriable=False)
    return output


def _too_large(size: str) -> ErrorInfo:
    return ErrorInfo(
        "FetchError",
        f"the response is {size}; a step output's limit is {MAX_STEP_OUTPUT_BYTES} (4 MiB)",
    )


def _shown(url: str) -> str:
    # Without its query: a key some APIs take there stays out of errors and logs.
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
