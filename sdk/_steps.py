"""The durable step model: step ids, memoized results, and planning the next step."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import time
from collections.abc import Callable
from typing import Any

from . import errors
from ._core.durations import to_ms, to_utc_ms
from ._core.ids import derived_id, step_hash
from ._event import Event, check_event
from ._types import is_name

MAX_STEPS_PER_RUN = 1_000
MAX_STEP_OUTPUT_BYTES = 4 * 1024 * 1024

OP_RUN = "run"
OP_SLEEP = "sleep"
OP_WAIT_FOR_EVENT = "wait_for_event"
OP_WAIT_FOR_SIGNAL = "wait_for_signal"
OP_INVOKE = "invoke"
OP_SEND_EVENT = "send_event"

# The attempt of the step whose body is executing in this context, and whether one is.
current_step_attempt: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "tideflow_step_attempt", default=None
)


class Interrupt(BaseException):
    """Stops a handler pass at its first step with no stored result.

    A BaseException so that a user's `except Exception` cannot swallow it.
    """


@dataclasses.dataclass
class PlannedOp:
    """A step call that has no stored result yet: what the worker runs or reports next."""

    op: str
    hash: str
    name: str
    opts: dict[str, Any] = dataclasses.field(default_factory=dict)
    handler: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()

    def to_report(self) -> dict[str, Any]:
        return {"op": self.op, "hash": self.hash, "name": self.name, "opts": self.opts}


@dataclasses.dataclass
class StoredStep:
    """A step's recorded result: `output` when it completed, `error` when it failed for good."""

    status: str
    output: Any = None
    error: dict[str, Any] | None = None


@dataclasses.dataclass
class Pass:
    """The state of one replay of a handler against a run's stored steps."""

    run_id: str
    app_id: str
    memo: dict[str, StoredStep]
    planned: list[PlannedOp] = dataclasses.field(default_factory=list)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    fatal: BaseException | None = None

    def resolve(self, name: str, op: str, **fields: Any) -> Any:
        """The stored result of this step call, or plans it and interrupts the pass."""
        if current_step_attempt.get() is not None:
            raise errors.TideflowError(
                f"step {name!r} called inside another step's body; steps cannot nest"
            )
        if not is_name(name):
            raise errors.TideflowError(f"a step id must be a non-empty string, got {name!r}")
        occurrence = self.counters.get(name, 0)
        self.counters[name] = occurrence + 1
        key = step_hash(name, occurrence)
        stored = self.memo.get(key)
        if stored is not None:
            return _replay(stored, op)
        if len(self.memo) + len(self.planned) >= MAX_STEPS_PER_RUN:
            self.fatal = errors.LimitError(
                f"step {name!r} would be step {MAX_STEPS_PER_RUN + 1} of this run; "
                f"the limit is {MAX_STEPS_PER_RUN} steps a run"
            )
            raise Interrupt()
        opts_builder = fields.pop("build_opts", None)
        opts = opts_builder(key) if opts_builder is not None else {}
        self.planned.append(PlannedOp(op=op, hash=key, name=name, opts=opts, **fields))
        raise Interrupt()


def _replay(stored: StoredStep, op: str) -> Any:
    if stored.status == "Failed":
        error = stored.error or {}
        raise errors.StepError(
            str(error.get("name", "Error")), str(error.get("message", "")), error.get("stack")
        )
    if op == OP_WAIT_FOR_EVENT and stored.output is not None:
        return Event.model_validate(stored.output)
    return stored.output


def sleep_opts(duration: datetime.timedelta | int | str) -> dict[str, Any]:
    return {"until_ms": _now_ms() + to_ms(duration, field="sleep duration")}


def sleep_until_opts(moment: datetime.datetime | str) -> dict[str, Any]:
    if isinstance(moment, str):
        moment = datetime.datetime.fromisoformat(moment)
    return {"until_ms": to_utc_ms(moment, field="sleep_until")}


def wait_for_event_opts(
    *, event: str, timeout: datetime.timedelta | int | str, if_exp: str | None
) -> dict[str, Any]:
    from ._core.expressions import compile_expression

    if if_exp is not None:
        compile_expression(if_exp)
    return {"event": event, "if_exp": if_exp, "timeout_ms": to_ms(timeout, field="timeout")}


def wait_for_signal_opts(*, signal: str, timeout: datetime.timedelta | int | str) -> dict[str, Any]:
    if not is_name(signal):
        raise errors.TideflowError(f"a signal must be a non-empty string, got {signal!r}")
    return {"signal": signal, "timeout_ms": to_ms(timeout, field="timeout")}


def invoke_opts(
    *, function_id: str, data: Any, timeout: datetime.timedelta | int | str | None
) -> dict[str, Any]:
    if not _is_object_or_none(data):
        raise errors.TideflowError(f"invoke data must be a JSON object, got {type(data).__name__}")
    return {
        "function_id": function_id,
        "data": data or {},
        "timeout_ms": None if timeout is None else to_ms(timeout, field="timeout"),
    }


def send_event_opts(
    run_id: str, key: str, events: Event | dict[str, Any] | list[Any]
) -> dict[str, Any]:
    from ._event import parse_events

    parsed = parse_events(events if isinstance(events, list) else [events])
    records = []
    for index, event in enumerate(parsed):
        check_event(event)
        record = event.model_dump(mode="json")
        # Stable ids: a replayed or re-executed send stores and starts each event only once.
        record["internal_id"] = derived_id(run_id, key, str(index))
        records.append(record)
    return {"events": records}


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_object_or_none(value: object) -> bool:
    return value is None or isinstance(value, dict)
