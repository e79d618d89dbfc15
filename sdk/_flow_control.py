"""Flow-control options of `create_function`: what users write, and its checked JSON form.

The option classes hold what the user gave; `flow_control_config` checks them all at once, when
the function is defined, so that every error names the function and the option (the classes on
their own do not know which function they belong to).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any, Literal

from . import errors
from ._core.durations import to_ms
from ._core.expressions import check_match_cost, compile_expression
from ._types import is_name

Duration = datetime.timedelta | int | str

MAX_CONCURRENCY_CONSTRAINTS = 2
MAX_CANCELS = 5
MAX_PRIORITY_S = 600
MAX_BATCH_SIZE = 100
_SECOND = 1000
_MINUTE = 60 * _SECOND
_DAY = 24 * 60 * _MINUTE
_WEEK = 7 * _DAY
_YEAR = 365 * _DAY
SCOPES = ("fn", "env", "account")
SINGLETON_MODES = ("skip", "cancel")


@dataclasses.dataclass(frozen=True)
class Concurrency:
    """At most `limit` steps of this function executing at once, per value of the CEL `key`
    over `event`; `scope` shares the limit with other functions (`env`, `account`).

    Args:
        limit: steps executing at once, 1 to 100,000. Sleeping and waiting runs hold no slot.
        key: a CEL expression over `event`; each value has a limit (and a FIFO line) of its own.
        scope: `fn` (this function), `env` (every function of `TIDEFLOW_ENV` using this key) or
            `account` (every function of the deployment using this key).

    Checked by `create_function`, which raises `ConfigError` naming the option for a value out
    of range or a key that does not compile.
    """

    limit: int
    key: str | None = None
    scope: Literal["fn", "env", "account"] = "fn"


@dataclasses.dataclass(frozen=True)
class Throttle:
    """GCRA on run starts: `limit` per `period` per `key`, `burst` back to back; excess waits.

    Args:
        limit: run starts per `period`, 1 to 100,000.
        period: 1 s to 7 days (a duration).
        key: a CEL expression over `event`; each value is throttled on its own.
        burst: runs that may start back to back before the `period / limit` spacing applies.

    Checked by `create_function`, which raises `ConfigError` naming the option for a value out
    of range or a key that does not compile.
    """

    limit: int
    period: Duration
    key: str | None = None
    burst: int = 1


@dataclasses.dataclass(frozen=True)
class RateLimit:
    """At most `limit` runs per `period` per `key`; events beyond it start no run.

    Args:
        limit: runs per `period`, 1 to 100,000.
        period: 1 s to 60 s (a duration).
        key: a CEL expression over `event`; each value is limited on its own.

    Checked by `create_function`, which raises `ConfigError` naming the option for a value out
    of range or a key that does not compile.
    """

    limit: int
    period: Duration
    key: str | None = None


@dataclasses.dataclass(frozen=True)
class Debounce:
    """Starts one run `period` after the last event of a burst (per `key`), with that event;
    `timeout` caps the delay from the burst's first event.

    Args:
        period: the quiet time after the last event, 1 s to 7 days.
        key: a CEL expression over `event`; each value has bursts of its own.
        timeout: the longest delay from a burst's first event to its run, `period` to 7 days.

    Checked by `create_function`, which raises `ConfigError` naming the option for a value out
    of range or a key that does not compile.
    """

    period: Duration
    key: str | None = None
    timeout: Duration | None = None


@dataclasses.dataclass(frozen=True)
class Priority:
    """`run`: a CEL expression over `event` giving -600..600, the seconds a run jumps ahead.

    Orders the step jobs waiting for a `concurrency` slot; without a limit it changes
    nothing.

    Checked by `create_function`, which raises `ConfigError` naming the option for a value out
    of range or a key that does not compile.
    """

    run: str


@dataclasses.dataclass(frozen=True)
class Singleton:
    """One run at a time per `key`: `skip` starts no new run while one runs, `cancel` cancels
    the running one for the new one.

    Args:
        key: a CEL expression over `event`; None: one run of the function at a time.
        mode: `skip` (the new event starts no run) or `cancel` (the unfinished run is
            cancelled, and the new one starts).

    Checked by `create_function`, which raises `ConfigError` naming the option for a value out
    of range or a key that does not compile.
    """

    key: str | None = None
    mode: Literal["skip", "cancel"] = "skip"


@dataclasses.dataclass(frozen=True)
class Batch:
    """Up to `max_size` events per run, started when full or `timeout` after the first; one
    batch per `key`; events for which `if_exp` is false start runs of their own.

    Args:
        max_size: 1 to 100 events.
        timeout: 1 s to 60 s after the batch's first event.
        key: a CEL expression over `event`; each value is batched on its own.
        if_exp: a CEL condition over `event`; events for which it is false are not batched.

    Checked by `create_function`, which raises `ConfigError` naming the option for a value out
    of range or a key that does not compile.
    """

    max_size: int
    timeout: Duration
    key: str | None = None
    if_exp: str | None = None


@dataclasses.dataclass(frozen=True)
class Cancel:
    """Cancels a run when an `event` arrives for which `if_exp` (over `event` and `async`) is
    true, within `timeout` of the run's start.

    Args:
        event: the name of the cancelling event.
        if_exp: a CEL condition; `event` is the run's trigger, `async` the incoming event.
            None: any event of that name cancels.
        timeout: how long the run listens, from its creation, 1 s to 365 days; None: until
            it ends.

    Checked by `create_function`, which raises `ConfigError` naming the option for a value out
    of range or a key that does not compile.
    """

    event: str
    if_exp: str | None = None
    timeout: Duration | None = None


@dataclasses.dataclass(frozen=True)
class Timeouts:
    """`start`: cancel a run whose first step has not started this long after its event;
    `finish`: cancel a run not finished this long after its first step started.

    Each is 1 s to a year. The run ends `Cancelled` with an error whose message ends in
    `(timeout)`.

    Checked by `create_function`, which raises `ConfigError` naming the option for a value out
    of range or a key that does not compile.
    """

    start: Duration | None = None
    finish: Duration | None = None


@dataclasses.dataclass(frozen=True)
class FlowControl:
    """Every flow-control option as given to `create_function` (None: not set)."""

    concurrency: int | Concurrency | Sequence[Concurrency] | None = None
    throttle: Throttle | None = None
    rate_limit: RateLimit | None = None
    debounce: Debounce | None = None
    priority: Priority | None = None
    singleton: Singleton | None = None
    idempotency: str | None = None
    batch_events: Batch | None = None
    cancel: Cancel | Sequence[Cancel] | None = None
    timeouts: Timeouts | None = None


_NOT_YET: tuple[str, ...] = ()
"""Options of the contract that the engine does not apply yet: refused, never ignored."""

_NOT_WITH_BATCHING = ("rate_limit", "idempotency", "debounce", "priority", "singleton", "cancel")
"""As Inngest: a batch's run has no single event for these options to key or match on."""


def flow_control_config(fn_id: str, options: FlowControl) -> dict[str, Any]:
    """The options as the JSON the scheduler reads; ConfigError names the function and option."""
    check = _Checker(fn_id)
    for name in _NOT_YET:
        if getattr(options, name) is not None:
            raise errors.ConfigError(f"{fn_id}: {name} is not supported by this engine yet")
    if options.batch_events is not None:
        clashing = [name for name in _NOT_WITH_BATCHING if getattr(options, name) is not None]
        if clashing:
            raise errors.ConfigError(
                f"{fn_id}: batch_events cannot be combined with {', '.join(clashing)}"
            )
    config: dict[str, Any] = {}
    for name in _CHECKED:
        value = getattr(options, name)
        if value is not None:
            config[name] = getattr(check, name)(value)
    return config


_CHECKED = (
    "concurrency",
    "throttle",
    "rate_limit",
    "debounce",
    "priority",
    "singleton",
    "idempotency",
    "batch_events",
    "timeouts",
    "cancel",
)
"""Options checked by the `_Checker` method of the same name."""


class _Checker:
    def __init__(self, fn_id: str) -> None:
        self.fn_id = fn_id

    def fail(self, option: str, message: str) -> errors.ConfigError:
        return errors.ConfigError(f"{self.fn_id}: {option} {message}")

    def instance(self, option: str, value: object, kind: type) -> None:
        if not isinstance(value, kind):
            raise self.fail(option, f"must be a tideflow.{kind.__name__}, got {value!r}")

    def count(self, option: str, value: object, minimum: int, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise self.fail(option, f"must be an int in {minimum}..{maximum}, got {value!r}")
        return value

    def duration(self, option: str, value: object, minimum_ms: int, maximum_ms: int) -> int:
        try:
            ms = to_ms(value, field=f"{self.fn_id}: {option}")  # type: ignore[arg-type]
        except errors.ConfigError:
            raise
        if not minimum_ms <= ms <= maximum_ms:
            raise self.fail(
                option,
                f"must be between {_text(minimum_ms)} and {_text(maximum_ms)}, got {value!r}",
            )
        return ms

    def expression(self, option: str, text: object) -> str:
        if not isinstance(text, str):
            raise self.fail(option, f"must be a CEL expression string, got {text!r}")
        try:
            compile_expression(text)
        except errors.ExpressionError as exc:
            raise errors.ExpressionError(text, f"{self.fn_id}: {option}: {exc.reason}") from exc
        return text

    def matching_expression(self, option: str, text: object) -> str:
        """An expression evaluated per incoming event and waiting run: bounded in cost."""
        text = self.expression(option, text)
        try:
            check_match_cost(text)
        except errors.ExpressionError as exc:
            raise errors.ExpressionError(text, f"{self.fn_id}: {option}: {exc.reason}") from exc
        return text

    def key(self, option: str, text: object) -> str | None:
        return None if text is None else self.expression(f"{option}.key", text)

    def concurrency(self, value: object) -> list[dict[str, Any]]:
        if isinstance(value, int) and not isinstance(value, bool):
            value = Concurrency(limit=value)
        constraints = list(value) if isinstance(value, (list, tuple)) else [value]
        if not 1 <= len(constraints) <= MAX_CONCURRENCY_CONSTRAINTS:
            raise self.fail(
                "concurrency",
                f"takes 1 to {MAX_CONCURRENCY_CONSTRAINTS} constraints, got {len(constraints)}",
            )
        checked = []
        for constraint in constraints:
            self.instance("concurrency", constraint, Concurrency)
            assert isinstance(constraint, Concurrency)
            if constraint.scope not in SCOPES:
                raise self.fail(
                    "concurrency.scope", f"must be one of {SCOPES}, got {constraint.scope!r}"
                )
            checked.append(
                {
                    "limit": self.count("concurrency.limit", constraint.limit, 1, 100_000),
                    "key": self.key("concurrency", constraint.key),
                    "scope": constraint.scope,
                }
            )
        return checked

    def throttle(self, value: Throttle) -> dict[str, Any]:
        self.instance("throttle", value, Throttle)
        return {
            "limit": self.count("throttle.limit", value.limit, 1, 100_000),
            "period_ms": self.duration("throttle.period", value.period, _SECOND, _WEEK),
            "key": self.key("throttle", value.key),
            "burst": self.count("throttle.burst", value.burst, 1, 100_000),
        }

    def rate_limit(self, value: RateLimit) -> dict[str, Any]:
        self.instance("rate_limit", value, RateLimit)
        return {
            "limit": self.count("rate_limit.limit", value.limit, 1, 100_000),
            "period_ms": self.duration("rate_limit.period", value.period, _SECOND, _MINUTE),
            "key": self.key("rate_limit", value.key),
        }

    def debounce(self, value: Debounce) -> dict[str, Any]:
        self.instance("debounce", value, Debounce)
        period = self.duration("debounce.period", value.period, _SECOND, _WEEK)
        timeout = None
        if value.timeout is not None:
            timeout = self.duration("debounce.timeout", value.timeout, period, _WEEK)
        return {"period_ms": period, "key": self.key("debounce", value.key), "timeout_ms": timeout}

    def priority(self, value: Priority) -> dict[str, Any]:
        self.instance("priority", value, Priority)
        return {"run": self.expression("priority.run", value.run)}

    def singleton(self, value: Singleton) -> dict[str, Any]:
        self.instance("singleton", value, Singleton)
        if value.mode not in SINGLETON_MODES:
            raise self.fail(
                "singleton.mode", f"must be one of {SINGLETON_MODES}, got {value.mode!r}"
            )
        return {"key": self.key("singleton", value.key), "mode": value.mode}

    def timeouts(self, value: Timeouts) -> dict[str, Any]:
        self.instance("timeouts", value, Timeouts)
        if value.start is None and value.finish is None:
            raise self.fail("timeouts", "needs start, finish or both")
        return {
            name: None
            if limit is None
            else self.duration(f"timeouts.{name.removesuffix('_ms')}", limit, _SECOND, _YEAR)
            for name, limit in (("start_ms", value.start), ("finish_ms", value.finish))
        }

    def idempotency(self, text: str) -> str:
        return self.expression("idempotency", text)

    def batch_events(self, value: Batch) -> dict[str, Any]:
        self.instance("batch_events", value, Batch)
        return {
            "max_size": self.count("batch_events.max_size", value.max_size, 1, MAX_BATCH_SIZE),
            "timeout_ms": self.duration("batch_events.timeout", value.timeout, _SECOND, _MINUTE),
            "key": self.key("batch_events", value.key),
            "if_exp": (
                None
                if value.if_exp is None
                else self.expression("batch_events.if_exp", value.if_exp)
            ),
        }

    def cancel(self, value: Cancel | Sequence[Cancel]) -> list[dict[str, Any]]:
        cancels = list(value) if isinstance(value, (list, tuple)) else [value]
        if not 1 <= len(cancels) <= MAX_CANCELS:
            raise self.fail("cancel", f"takes 1 to {MAX_CANCELS} Cancel, got {len(cancels)}")
        checked = []
        for item in cancels:
            self.instance("cancel", item, Cancel)
            assert isinstance(item, Cancel)
            if not is_name(item.event):
                raise self.fail("cancel.event", f"must be an event name, got {item.event!r}")
            checked.append(
                {
                    "event": item.event,
                    "if_exp": (
                        None
                        if item.if_exp is None
                        else self.matching_expression("cancel.if_exp", item.if_exp)
                    ),
                    "timeout_ms": (
                        None
                        if item.timeout is None
                        else self.duration("cancel.timeout", item.timeout, _SECOND, _YEAR)
                    ),
                }
            )
        return checked


def _text(ms: int) -> str:
    for unit, size in (("d", _DAY), ("m", _MINUTE), ("s", _SECOND)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
