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


Ask: TypeAlias = Sleep | WaitForEvent | WaitForSignal | Invoke
_ASKS: dict[str, type[Ask]] = {
    kind.op: kind for kind in (Sleep, WaitForEvent, WaitForSignal, Invoke)
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
