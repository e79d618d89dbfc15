"""The typed protocol between a worker and the scheduler.

A worker replays a run's handler and reports one `Outcome` per job: the run ended, it needs the
scheduler for some steps (`Suspended`, with what each step asks for), some steps failed and wait
for a retry, or it simply has more to do. Outcomes travel through the store as JSON: `encode`
and `decode` here are the only place that knows their shape.
"""

from __future__ import annotations

import dataclasses
import traceback
from typing import Any, ClassVar, TypeAlias

from tideflow import errors

JSON: TypeAlias = Any

OP_RUN = "run"
OP_SLEEP = "sleep"
OP_WAIT_FOR_EVENT = "wait_for_event"
OP_WAIT_FOR_SIGNAL = "wait_for_signal"
OP_INVOKE = "invoke"
OP_SEND_EVENT = "send_event"
OP_FETCH = "fetch"
OP_AI_INFER = "ai_infer"
OP_AI_WRAP = "ai_wrap"
OFFLOADED_OPS = frozenset({OP_FETCH, OP_AI_INFER})
"""Steps whose request the engine makes, not the worker running the function."""


@dataclasses.dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error as it is stored and shown: `{"name", "message", "stack"}`."""

    name: str
    message: str
    stack: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "message": self.message, "stack": self.stack}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> ErrorInfo:
        return cls(
            str(value.get("name", "Error")), str(value.get("message", "")), value.get("stack")
        )

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorInfo:
        if isinstance(exc, errors.StepError):
            return cls(exc.name, exc.message, exc.stack)
        message = getattr(exc, "message", None)
        if not isinstance(message, str):
            message = str(exc)
        stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        return cls(type(exc).__name__, message, stack)


# What a step asks the scheduler for: the steps a worker cannot finish by itself.


@dataclasses.dataclass(frozen=True, slots=True)
class Sleep:
    op: ClassVar[str] = OP_SLEEP
    until_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class WaitForEvent:
    op: ClassVar[str] = OP_WAIT_FOR_EVENT
    event: str
    timeout_ms: int
    if_exp: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class WaitForSignal:
    op: ClassVar[str] = OP_WAIT_FOR_SIGNAL
    signal: str
    timeout_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class Invoke:
    op: ClassVar[str] = OP_INVOKE
    function_id: str
    data: dict[str, Any]
    timeout_ms: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Fetch:
    """An HTTP request the engine makes for the run (`step.fetch`). `body` is a JSON value: a
    string is sent as it is, anything else as JSON."""

    op: ClassVar[str] = OP_FETCH
    url: str
    method: str = "GET"
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: JSON = None
    timeout_ms: int = 30_000


@dataclasses.dataclass(frozen=True, slots=True)
class AiInfer:
    """A model provider call the engine makes for the run (`step.ai.infer`).

    The API key is `api_key` when the adapter was given one (it travels with the request and is
    never recorded), else read from the variable `api_key_env` where the request is made.
    """

    op: ClassVar[str] = OP_AI_INFER
    provider: str
    url: str
    model: str
    body: dict[str, Any]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    api_key: str | None = None
    api_key_env: str | None = None
    timeout_ms: int = 120_000


Offload: TypeAlias = Fetch | AiInfer
Ask: TypeAlias = Sleep | WaitForEvent | WaitForSignal | Invoke | Fetch | AiInfer
_ASKS: dict[str, type[Ask]] = {
    kind.op: kind for kind in (Sleep, WaitForEvent, WaitForSignal, Invoke, Fetch, AiInfer)
}

_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "cookie"})
REDACTED = "[redacted]"


def recorded_input(ask: Offload) -> dict[str, Any]:
    """What an offloaded step records as its input: the request without its secrets (the API
    key, and the values of credential headers)."""
    headers = {
        name: REDACTED if name.lower() in _SECRET_HEADERS else value
        for name, value in ask.headers.items()
    }
    if isinstance(ask, Fetch):
        return {"method": ask.method, "url": ask.url, "headers": headers, "body": ask.body}
    return {
        "provider": ask.provider,
        "url": ask.url,
        "model": ask.model,
        "headers": headers,
        "body": ask.body,
    }


@dataclasses.dataclass(frozen=True, slots=True)
class StepRequest:
    """A step the scheduler carries out: its id (`hash`), the user's name for it, what it asks."""

    hash: str
    name: str
    ask: Ask


@dataclasses.dataclass(frozen=True, slots=True)
class StepRetry:
    """A step attempt that failed with attempts left."""

    hash: str
    name: str
    attempt: int
    error: ErrorInfo
    started_at: int | None = None
    retry_after_ms: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class OffloadJob:
    """A request the engine makes for a run's waiting step (`fetch`, `ai.infer`): what the
    scheduler hands to the offload loops of the run's app."""

    run_id: str
    function_id: str
    app_id: str
    step_hash: str
    name: str
    attempt: int
    ask: Offload

    def encode(self) -> list[Any]:
        return [
            self.run_id,
            self.function_id,
            self.app_id,
            self.step_hash,
            self.name,
            self.attempt,
            self.ask.op,
            dataclasses.asdict(self.ask),
        ]

    @classmethod
    def decode(cls, body: list[Any]) -> OffloadJob:
        """The job `encode` wrote. Raises `ValueError` or `TypeError` for anything else."""
        run_id, function_id, app_id, step_hash, name, attempt, op, opts = body
        kind = _ASKS.get(op)
        if kind is None or not issubclass(kind, (Fetch, AiInfer)):
            raise ValueError(f"not an offloaded step op: {op!r}")
        return cls(
            str(run_id),
            str(function_id),
            str(app_id),
            str(step_hash),
            str(name),
            int(attempt),
            kind(**opts),
        )

    def result(
        self, output: JSON = None, error: ErrorInfo | None = None, *, is_retriable: bool = False
    ) -> OffloadResult:
        """What this request came to."""
        return OffloadResult(
            self.run_id,
            self.function_id,
            self.step_hash,
            self.name,
            self.ask.op,
            self.attempt,
            output,
            error,
            is_retriable,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class OffloadResult:
    """What an offloaded request came to: its `output`, or an `error`, `is_retriable` when it
    counts as a failed attempt (a network error, a timeout, a 5xx answer)."""

    run_id: str
    function_id: str
    step_hash: str
    name: str
    op: str
    attempt: int
    output: JSON = None
    error: ErrorInfo | None = None
    is_retriable: bool = False

    def encode(self) -> list[Any]:
        error = None if self.error is None else self.error.to_dict()
        return [
            self.run_id,
            self.function_id,
            self.step_hash,
            self.name,
            self.op,
            self.attempt,
            self.output,
            error,
            self.is_retriable,
        ]

    @classmethod
    def decode(cls, body: list[Any]) -> OffloadResult:
        """The result `encode` wrote. Raises `ValueError` or `TypeError` for anything else."""
        run_id, function_id, step_hash, name, op, attempt, output, error, is_retriable = body
        return cls(
            str(run_id),
            str(function_id),
            str(step_hash),
            str(name),
            str(op),
            int(attempt),
            output,
            None if error is None else ErrorInfo.from_dict(error),
            bool(is_retriable),
        )


# Outcomes of a job.


@dataclasses.dataclass(frozen=True, slots=True)
class Completed:
    """The handler returned: the run is over."""

    kind: ClassVar[str] = "completed"
    output: JSON = None


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """The run failed for good (a NonRetriableError, an uncaught StepError, a limit)."""

    kind: ClassVar[str] = "failed"
    error: ErrorInfo


@dataclasses.dataclass(frozen=True, slots=True)
class Errored:
    """The handler raised outside any step: the run is retried while it has attempts."""

    kind: ClassVar[str] = "error"
    error: ErrorInfo
    retry_after_ms: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Continue:
    """The job ran what it could in its time; the run has more steps to run at once."""

    kind: ClassVar[str] = "continue"


@dataclasses.dataclass(frozen=True, slots=True)
class Suspended:
    """The run needs the scheduler for these steps (sleeps, waits, invocations)."""

    kind: ClassVar[str] = "ops"
    requests: tuple[StepRequest, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Retrying:
    """These steps failed and are to be retried after a delay."""

    kind: ClassVar[str] = "step_retry"
    retries: tuple[StepRetry, ...]


Outcome: TypeAlias = Completed | Failed | Errored | Continue | Suspended | Retrying


def encode(outcome: Outcome) -> dict[str, Any]:
    """An outcome as JSON, tagged with its `kind`."""
    body: dict[str, Any] = {"kind": outcome.kind}
    match outcome:
        case Completed(output=output):
            body["output"] = output
        case Failed(error=error):
            body["error"] = error.to_dict()
        case Errored(error=error, retry_after_ms=retry_after_ms):
            body["error"] = error.to_dict()
            body["retry_after_ms"] = retry_after_ms
        case Suspended(requests=requests):
            body["ops"] = [_encode_request(request) for request in requests]
        case Retrying(retries=retries):
            body["steps"] = [
                {**dataclasses.asdict(retry), "error": retry.error.to_dict()} for retry in retries
            ]
    return body


def decode(body: dict[str, Any]) -> Outcome:
    """The outcome `encode` wrote. Raises `ValueError` for anything else."""
    kind = body.get("kind")
    if kind == Completed.kind:
        return Completed(body.get("output"))
    if kind == Failed.kind:
        return Failed(ErrorInfo.from_dict(body["error"]))
    if kind == Errored.kind:
        return Errored(ErrorInfo.from_dict(body["error"]), body.get("retry_after_ms"))
    if kind == Continue.kind:
        return Continue()
    if kind == Suspended.kind:
        return Suspended(tuple(_decode_request(item) for item in body["ops"]))
    if kind == Retrying.kind:
        return Retrying(
            tuple(
                StepRetry(**{**item, "error": ErrorInfo.from_dict(item["error"])})
                for item in body["steps"]
            )
        )
    raise ValueError(f"unknown outcome kind {kind!r}")


def _encode_request(request: StepRequest) -> dict[str, Any]:
    return {
        "op": request.ask.op,
        "hash": request.hash,
        "name": request.name,
        "opts": dataclasses.asdict(request.ask),
    }


def _decode_request(item: dict[str, Any]) -> StepRequest:
    kind = _ASKS.get(item["op"])
    if kind is None:
        raise ValueError(f"unknown step op {item['op']!r}")
    return StepRequest(item["hash"], item["name"], kind(**item["opts"]))
