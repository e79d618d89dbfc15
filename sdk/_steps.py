"""The durable step model: step ids, memoized results, and planning the next step."""

from __future__ import annotations

import contextvars
import dataclasses
import datetime
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from . import errors
from ._core import protocol
from ._core.durations import to_ms, to_utc_ms
from ._core.ids import derived_id, step_hash
from ._event import Event, check_event
from ._types import is_name

if TYPE_CHECKING:
    from ._middleware import Lifecycle

MAX_STEPS_PER_RUN = 1_000
MAX_STEP_OUTPUT_BYTES = 4 * 1024 * 1024
MAX_RUN_STATE_BYTES = 4 * 1024 * 1024
"""The default of the sum of a run's step outputs, as Inngest's (TIDEFLOW_MAX_RUN_STATE_BYTES)."""

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
    """A step call that has no stored result yet: what the worker runs (a `run` step's handler,
    a `send_event` step's events) or asks the scheduler for (`ask`)."""

    op: str
    hash: str
    name: str
    ask: protocol.Ask | None = None
    handler: Callable[..., Any] | None = None
    args: tuple[Any, ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    input: Any = None
    """What the step records as its input (`ai.wrap`'s arguments)."""

    @property
    def is_local(self) -> bool:
        """Whether the worker carries this step out itself."""
        return self.ask is None

    def request(self) -> protocol.StepRequest:
        assert self.ask is not None
        return protocol.StepRequest(self.hash, self.name, self.ask)


@dataclasses.dataclass
class StoredStep:
    """A step's recorded result: `output` when it completed, `error` when it failed for good."""

    status: str
    output: Any = None
    error: dict[str, Any] | None = None

    @property
    def data(self) -> Any:
        """`output`, under inngest-py's name (for middleware written for it)."""
        return self.output

    @data.setter
    def data(self, value: Any) -> None:
        self.output = value


@dataclasses.dataclass
class Pass:
    """The state of one replay of a handler against a run's stored steps."""

    run_id: str
    app_id: str
    memo: dict[str, StoredStep]
    planned: list[PlannedOp] = dataclasses.field(default_factory=list)
    counters: dict[str, int] = dataclasses.field(default_factory=dict)
    fatal: BaseException | None = None
    lifecycle: Lifecycle | None = None
    replaying: bool = dataclasses.field(init=False)
    """True until every stored step has been returned to the handler (or a new one is reached):
    until then the handler is re-running code that has run before."""
    consumed: set[str] = dataclasses.field(default_factory=set)
    _entered: bool = False

    def __post_init__(self) -> None:
        self.replaying = bool(self.memo)

    async def settle(self) -> None:
        """Tells the middleware once the handler has left its stored steps behind."""
        if not self.replaying and not self._entered:
            self._entered = True
            if self.lifecycle is not None:
                try:
                    await self.lifecycle.new_code()
                except errors.MiddlewareError as exc:
                    self._fail(exc)

    def settle_blocking(self) -> None:
        """`settle` from a plain handler's thread."""
        if not self.replaying and not self._entered:
            self._entered = True
            if self.lifecycle is not None:
                try:
                    self.lifecycle.new_code_blocking()
                except errors.MiddlewareError as exc:
                    self._fail(exc)

    def refuse(self, exc: BaseException) -> NoReturn:
        """Fails the run at once with `exc` (a definition error: retrying cannot help)."""
        self._fail(exc)

    def _fail(self, exc: BaseException) -> NoReturn:
        # Out of the handler past any `except Exception` of the user's.
        self.fatal = exc
        raise Interrupt() from exc

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
            self.consumed.add(key)
            self.replaying = len(self.consumed) < len(self.memo)
            return _replay(stored, op)
        self.replaying = False
        if len(self.memo) + len(self.planned) >= MAX_STEPS_PER_RUN:
            self.fatal = errors.LimitError(
                f"step {name!r} would be step {MAX_STEPS_PER_RUN + 1} of this run; "
                f"the limit is {MAX_STEPS_PER_RUN} steps a run"
            )
            raise Interrupt()
        build = fields.pop("build", None)
        if build is not None:
            fields.update(build(key))
        self.planned.append(PlannedOp(op=op, hash=key, name=name, **fields))
        raise Interrupt()


def _replay(stored: StoredStep, op: str) -> Any:
    if stored.status == "Failed":
        error = stored.error or {}
        raise errors.StepError(
            str(error.get("name", "Error")), str(error.get("message", "")), error.get("stack")
        )
    if op == protocol.OP_WAIT_FOR_EVENT and stored.output is not None:
        return Event.model_validate(stored.output)
    return stored.output


def sleep_ask(duration: datetime.timedelta | int | str) -> protocol.Sleep:
    return protocol.Sleep(until_ms=_now_ms() + to_ms(duration, field="sleep duration"))


def sleep_until_ask(moment: datetime.datetime | str) -> protocol.Sleep:
    if isinstance(moment, str):
        moment = datetime.datetime.fromisoformat(moment)
    return protocol.Sleep(until_ms=to_utc_ms(moment, field="sleep_until"))


def wait_for_event_ask(
    *, event: str, timeout: datetime.timedelta | int | str, if_exp: str | None
) -> protocol.WaitForEvent:
    from ._core.expressions import check_match_cost, compile_expression

    if if_exp is not None:
        compile_expression(if_exp)
        check_match_cost(if_exp)
    return protocol.WaitForEvent(
        event=event, if_exp=if_exp, timeout_ms=to_ms(timeout, field="timeout")
    )


def wait_for_signal_ask(
    *, signal: str, timeout: datetime.timedelta | int | str
) -> protocol.WaitForSignal:
    if not is_name(signal):
        raise errors.TideflowError(f"a signal must be a non-empty string, got {signal!r}")
    return protocol.WaitForSignal(signal=signal, timeout_ms=to_ms(timeout, field="timeout"))


def invoke_ask(
    *, function_id: str, data: Any, timeout: datetime.timedelta | int | str | None
) -> protocol.Invoke:
    if not _is_object_or_none(data):
        raise errors.TideflowError(f"invoke data must be a JSON object, got {type(data).__name__}")
    return protocol.Invoke(
        function_id=function_id,
        data=data or {},
        timeout_ms=None if timeout is None else to_ms(timeout, field="timeout"),
    )


DEFAULT_FETCH_TIMEOUT_MS = 30_000
DEFAULT_INFER_TIMEOUT_MS = 120_000


def fetch_ask(
    url: Any,
    *,
    method: Any,
    headers: Any,
    body: Any,
    timeout: datetime.timedelta | int | str | None,
) -> protocol.Fetch:
    """`step.fetch`'s request, checked. Raises `FetchError` naming what is wrong."""
    check_url(url)
    if not isinstance(method, str) or not method.isalpha():
        raise errors.FetchError(f"fetch method must be an HTTP method name, got {method!r}")
    return protocol.Fetch(
        url=url,
        method=method.upper(),
        headers=_headers(headers),
        body=_json_body(body),
        timeout_ms=_timeout_ms(timeout, DEFAULT_FETCH_TIMEOUT_MS),
    )


def infer_ask(
    adapter: Any, body: Any, timeout: datetime.timedelta | int | str | None
) -> protocol.AiInfer:
    """`step.ai.infer`'s request, checked. Raises `FetchError` naming what is wrong."""
    from .ai import Adapter

    if not isinstance(adapter, Adapter):
        raise errors.FetchError(
            f"ai.infer adapter must be tideflow.ai.OpenAI or tideflow.ai.Anthropic, "
            f"got {type(adapter).__name__}"
        )
    if not isinstance(body, dict):
        raise errors.FetchError(f"ai.infer body must be a JSON object, got {type(body).__name__}")
    _json_body(body)
    return adapter.ask(body, _timeout_ms(timeout, DEFAULT_INFER_TIMEOUT_MS))


def check_url(url: Any) -> None:
    """Raises `FetchError` unless `url` is an absolute http(s) URL."""
    parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise errors.FetchError(f"fetch url must be an absolute http(s) URL, got {url!r}")


def wrap_input(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """`ai.wrap`'s recorded input: its arguments as JSON (a value JSON cannot hold, such as an
    SDK client, as its `repr`)."""
    return json.loads(json.dumps({"args": list(args), "kwargs": kwargs}, default=repr))


def _headers(headers: Any) -> dict[str, str]:
    if headers is None:
        return {}
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise errors.FetchError(f"fetch headers must map strings to strings, got {headers!r}")
    return dict(headers)


def _json_body(body: Any) -> Any:
    try:
        json.dumps(body, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise errors.FetchError(f"fetch body is not JSON-serialisable: {exc}") from None
    return body


def _timeout_ms(timeout: datetime.timedelta | int | str | None, default: int) -> int:
    if timeout is None:
        return default
    try:
        ms = to_ms(timeout, field="timeout")
    except errors.ConfigError as exc:
        raise errors.FetchError(str(exc)) from None
    if ms <= 0:
        raise errors.FetchError(f"timeout must be positive, got {timeout!r}")
    return ms


def send_event_records(
    run_id: str, key: str, events: Event | dict[str, Any] | list[Any]
) -> tuple[dict[str, Any], ...]:
    from ._event import parse_events

    parsed = parse_events(events if isinstance(events, list) else [events])
    records = []
    for index, event in enumerate(parsed):
        check_event(event)
        record = event.model_dump(mode="json")
        # Stable ids: a replayed or re-executed send stores and starts each event only once.
        record["internal_id"] = derived_id(run_id, key, str(index))
        records.append(record)
    return tuple(records)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _is_object_or_none(value: object) -> bool:
    return value is None or isinstance(value, dict)
