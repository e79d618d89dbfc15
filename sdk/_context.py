"""What a handler receives: the triggering event(s), the step API, and run metadata."""

from __future__ import annotations

import asyncio
import datetime
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import _steps as steps
from . import errors
from ._core import protocol
from ._core import realtime as rt
from ._event import Event
from ._realtime import Channel, Topic
from ._realtime import resolve as resolve_topic
from ._steps import Interrupt, Pass

if TYPE_CHECKING:
    from ._function import Function

_Duration = datetime.timedelta | int | str
_T = TypeVar("_T")
Publisher = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


class _StepCalls:
    """The step methods' shared logic; `Step` and `SyncStep` expose it async or plain."""

    def __init__(self, state: Pass) -> None:
        self._state = state

    def _run(self, step_id: str, handler: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        if not callable(handler):
            raise TypeError(f"step {step_id!r}: handler must be callable, got {handler!r}")
        return self._state.resolve(step_id, protocol.OP_RUN, handler=handler, args=args)

    def _ask(self, step_id: str, ask: protocol.Ask) -> Any:
        return self._state.resolve(step_id, ask.op, ask=ask)

    def _sleep(self, step_id: str, duration: _Duration) -> None:
        self._ask(step_id, steps.sleep_ask(duration))

    def _sleep_until(self, step_id: str, moment: datetime.datetime | str) -> None:
        self._ask(step_id, steps.sleep_until_ask(moment))

    def _wait_for_event(
        self, step_id: str, event: str, timeout: _Duration, if_exp: str | None
    ) -> Event | None:
        try:
            ask = steps.wait_for_event_ask(event=event, timeout=timeout, if_exp=if_exp)
        except errors.ExpressionError as exc:
            self._state.refuse(
                errors.ExpressionError(exc.expression, f"step {step_id!r}: {exc.reason}")
            )
        result: Event | None = self._ask(step_id, ask)
        return result

    def _wait_for_signal(self, step_id: str, signal: str, timeout: _Duration) -> Any:
        return self._ask(step_id, steps.wait_for_signal_ask(signal=signal, timeout=timeout))

    def _invoke(self, step_id: str, function_id: str, data: Any, timeout: _Duration | None) -> Any:
        return self._ask(
            step_id, steps.invoke_ask(function_id=function_id, data=data, timeout=timeout)
        )

    def _send_event(self, step_id: str, events: Any) -> list[str]:
        run_id = self._state.run_id
        result: list[str] = self._state.resolve(
            step_id,
            protocol.OP_SEND_EVENT,
            build=lambda key: {"events": steps.send_event_records(run_id, key, events)},
        )
        return result

    def _fetch(
        self,
        step_id: str,
        url: str,
        method: str,
        headers: dict[str, str] | None,
        body: Any,
        timeout: _Duration | None,
    ) -> Any:
        return self._offload(
            step_id,
            protocol.OP_FETCH,
            lambda: steps.fetch_ask(
                url, method=method, headers=headers, body=body, timeout=timeout
            ),
        )

    def _infer(self, step_id: str, adapter: Any, body: Any, timeout: _Duration | None) -> Any:
        return self._offload(
            step_id, protocol.OP_AI_INFER, lambda: steps.infer_ask(adapter, body, timeout)
        )

    def _offload(self, step_id: str, op: str, build: Callable[[], protocol.Offload]) -> Any:
        try:
            ask = build()
        except errors.FetchError as exc:
            # Bad input fails the step (the handler sees a StepError), as a bad result would.
            return self._state.resolve(step_id, op, handler=functools.partial(_raise, exc))
        return self._ask(step_id, ask)

    def _wrap(
        self, step_id: str, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        if not callable(fn):
            raise TypeError(f"step {step_id!r}: fn must be callable, got {fn!r}")
        return self._state.resolve(
            step_id,
            protocol.OP_AI_WRAP,
            handler=functools.partial(fn, **kwargs),
            args=args,
            input=steps.wrap_input(args, kwargs),
        )

    def _qualified(self, function_id: str, app_id: str | None) -> str:
        return f"{app_id or self._state.app_id}-{function_id}"

    async def _settled(self, value: _T) -> _T:
        await self._state.settle()
        return value

    def _settled_blocking(self, value: _T) -> _T:
        self._state.settle_blocking()
        return value


def _raise(exc: BaseException) -> None:
    raise exc


class AiSteps:
    """`ctx.step.ai` of an `async def` handler: model calls as steps."""

    def __init__(self, calls: _StepCalls) -> None:
        self._calls = calls

    async def infer(
        self,
        step_id: str,
        *,
        adapter: Any,
        body: dict[str, Any],
        timeout: _Duration | None = None,
    ) -> Any:
        """Has the engine send `body` to the model provider `adapter` names
        (`tideflow.ai.OpenAI` or `tideflow.ai.Anthropic`), and returns the provider's JSON
        response, memoized. The run holds no worker and no concurrency slot meanwhile. The
        prompt, the model and the token usage are recorded on the step; the API key is not.

        Network errors, timeouts, 429 and 5xx answers are failed attempts, retried like any
        step; another 4xx answer fails the step. Raises `StepError` (in the handler) when the
        step has failed for good, e.g. with a `FetchError` for bad input.
        """
        return await self._calls._settled(self._calls._infer(step_id, adapter, body, timeout))

    async def wrap(self, step_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Runs `fn(*args, **kwargs)` (an AI SDK call, say) in the worker as a step, recording
        its arguments as the step's input; returns its JSON-serialisable result, memoized.
        Raises `StepError` when the step has failed for good."""
        return await self._calls._settled(self._calls._wrap(step_id, fn, args, kwargs))


class SyncAiSteps:
    """`ctx.step.ai` of a plain `def` handler: the same methods, synchronous."""

    def __init__(self, calls: _StepCalls) -> None:
        self._calls = calls

    def infer(
        self,
        step_id: str,
        *,
        adapter: Any,
        body: dict[str, Any],
        timeout: _Duration | None = None,
    ) -> Any:
        """`AiSteps.infer`, synchronous. Raises `StepError` when the step has failed for good."""
        return self._calls._settled_blocking(self._calls._infer(step_id, adapter, body, timeout))

    def wrap(self, step_id: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """`AiSteps.wrap`, synchronous. Raises `StepError` when the step has failed for good."""
        return self._calls._settled_blocking(self._calls._wrap(step_id, fn, args, kwargs))


class Step(_StepCalls):
    """The step API of an `async def` handler. Every method is memoized by its step id.

    Attributes:
        ai: model calls as steps (`ai.infer`, `ai.wrap`).
    """

    def __init__(self, state: Pass) -> None:
        super().__init__(state)
        self.ai = AiSteps(self)

    async def fetch(
        self,
        step_id: str,
        url: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: Any = None,
        timeout: _Duration | None = None,
    ) -> Any:
        """Has the engine make an HTTP request (not this worker) and returns
        `{"status", "headers", "body"}`, memoized: a replay never repeats it. `body` is sent as
        it is when a string, else as JSON; the response's `body` is JSON when it is JSON, else
        text. The run holds no worker and no concurrency slot meanwhile.

        Network errors, timeouts (default 30 s) and 5xx answers are failed attempts, retried
        like any step; a 4xx answer is returned. Raises `StepError` (in the handler) when the
        step has failed for good, e.g. with a `FetchError` for a URL that is not http(s), a body
        that is not JSON, a host `TIDEFLOW_FETCH_ALLOW` does not list, a response over 4 MiB.
        """
        return await self._settled(self._fetch(step_id, url, method, headers, body, timeout))

    async def run(self, step_id: str, handler: Callable[..., Any], *args: Any) -> Any:
        """Runs `handler(*args)` once for this run and returns its JSON-serialisable result.

        `handler` may be sync or async; it runs at least once, until it returns, and its
        result is stored: later executions of the handler get it back without running it.
        An error it raises is retried (up to the function's `retries`, with backoff) unless it
        is a `NonRetriableError`; a `RetryAfterError` sets the delay.

        Raises:
            StepError: the step has failed for good (attempts used up, `NonRetriableError`,
                or a result that is not JSON-serialisable or over 4 MiB).
        """
        return await self._settled(self._run(step_id, handler, args))

    async def sleep(self, step_id: str, duration: _Duration) -> None:
        """Pauses the run for `duration`; no process holds it meanwhile."""
        self._sleep(step_id, duration)
        await self._settled(None)

    async def sleep_until(self, step_id: str, moment: datetime.datetime | str) -> None:
        """Pauses the run until an aware datetime."""
        self._sleep_until(step_id, moment)
        await self._settled(None)

    async def wait_for_event(
        self, step_id: str, *, event: str, timeout: _Duration, if_exp: str | None = None
    ) -> Event | None:
        """Waits for an event named `event` matching `if_exp`; `None` on timeout.

        Only events that arrive after the wait started match. In `if_exp` (CEL), `event` is
        this run's triggering event and `async` the incoming one.

        Raises:
            ExpressionError: `if_exp` does not compile (raised here, before anything waits).
        """
        return await self._settled(self._wait_for_event(step_id, event, timeout, if_exp))

    async def wait_for_signal(self, step_id: str, *, signal: str, timeout: _Duration) -> Any:
        """Waits for `POST /v1/signals` naming `signal`; its data, or `None` on timeout."""
        return await self._settled(self._wait_for_signal(step_id, signal, timeout))

    async def invoke(
        self,
        step_id: str,
        *,
        function: Function,
        data: Any = None,
        timeout: _Duration | None = None,
    ) -> Any:
        """Runs another function with `data` as its event's data, and returns its output.

        The invoked run passes rate limit, idempotency, singleton and throttle by.

        Raises:
            StepError: the invoked run failed, or did not end within `timeout`
                (`InvokeTimeoutError`).
        """
        return await self._settled(self._invoke(step_id, function.id, data, timeout))

    async def invoke_by_id(
        self,
        step_id: str,
        *,
        function_id: str,
        data: Any = None,
        app_id: str | None = None,
        timeout: _Duration | None = None,
    ) -> Any:
        """Like `invoke`, naming the function by its `fn_id` (and `app_id`, default this app)."""
        return await self._settled(
            self._invoke(step_id, self._qualified(function_id, app_id), data, timeout)
        )

    async def send_event(self, step_id: str, events: Any) -> list[str]:
        """Sends one event or a list, once for this run; returns their ids."""
        return await self._settled(self._send_event(step_id, events))


class SyncStep(_StepCalls):
    """The step API of a plain `def` handler: the same methods, synchronous.

    Attributes:
        ai: model calls as steps (`ai.infer`, `ai.wrap`).
    """

    def __init__(self, state: Pass) -> None:
        super().__init__(state)
        self.ai = SyncAiSteps(self)

    def fetch(
        self,
        step_id: str,
        url: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: Any = None,
        timeout: _Duration | None = None,
    ) -> Any:
        """`Step.fetch`, synchronous. Raises `StepError` when the step has failed for good."""
        return self._settled_blocking(self._fetch(step_id, url, method, headers, body, timeout))

    def run(self, step_id: str, handler: Callable[..., Any], *args: Any) -> Any:
        """Runs `handler(*args)` once for this run and returns its JSON-serialisable result."""
        return self._settled_blocking(self._run(step_id, handler, args))

    def sleep(self, step_id: str, duration: _Duration) -> None:
        """Pauses the run for `duration`."""
        self._sleep(step_id, duration)
        self._settled_blocking(None)

    def sleep_until(self, step_id: str, moment: datetime.datetime | str) -> None:
        """Pauses the run until an aware datetime."""
        self._sleep_until(step_id, moment)
        self._settled_blocking(None)

    def wait_for_event(
        self, step_id: str, *, event: str, timeout: _Duration, if_exp: str | None = None
    ) -> Event | None:
        """Waits for a matching event; `None` on timeout."""
        return self._settled_blocking(self._wait_for_event(step_id, event, timeout, if_exp))

    def wait_for_signal(self, step_id: str, *, signal: str, timeout: _Duration) -> Any:
        """Waits for a signal; its data, or `None` on timeout."""
        return self._settled_blocking(self._wait_for_signal(step_id, signal, timeout))

    def invoke(
        self,
        step_id: str,
        *,
        function: Function,
        data: Any = None,
        timeout: _Duration | None = None,
    ) -> Any:
        """Runs another function and returns its output."""
        return self._settled_blocking(self._invoke(step_id, function.id, data, timeout))

    def invoke_by_id(
        self,
        step_id: str,
        *,
        function_id: str,
        data: Any = None,
        app_id: str | None = None,
        timeout: _Duration | None = None,
    ) -> Any:
        """Like `invoke`, naming the function by id."""
        return self._settled_blocking(
            self._invoke(step_id, self._qualified(function_id, app_id), data, timeout)
        )

    def send_event(self, step_id: str, events: Any) -> list[str]:
        """Sends events once for this run; returns their ids."""
        return self._settled_blocking(self._send_event(step_id, events))


class Group:
    """Runs several step calls in parallel: `await ctx.group.parallel((lambda: ..., ...))`."""

    async def parallel(
        self, callables: Sequence[Callable[[], Awaitable[Any] | Any]]
    ) -> tuple[Any, ...]:
        """Runs the step calls that `callables` make at the same time; returns their results in
        the order given.

        Each callable makes one step call (`lambda: ctx.step.run("a", f)`). Steps not run yet
        are started together, each memoized and retried on its own; the group returns once
        every one has a result. A step out of attempts raises its `StepError` here.
        """
        results: list[Any] = []
        interrupted = False
        for call in callables:
            try:
                value = call()
                results.append(await value if inspect.isawaitable(value) else value)
            except Interrupt:
                # Keep going: each branch plans its own next step, and they all run together.
                interrupted = True
        if interrupted:
            raise Interrupt()
        return tuple(results)


class SyncGroup:
    """`Group` for plain `def` handlers."""

    def parallel(self, callables: Sequence[Callable[[], Any]]) -> tuple[Any, ...]:
        """`Group.parallel` for plain handlers: runs the step calls together, returns their
        results in order; a step out of attempts raises its `StepError` here."""
        results: list[Any] = []
        interrupted = False
        for call in callables:
            try:
                results.append(call())
            except Interrupt:
                interrupted = True
        if interrupted:
            raise Interrupt()
        return tuple(results)


class ReplayLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger that stays quiet while its handler replays code that has run before."""

    def __init__(self, logger: logging.Logger, state: Pass) -> None:
        super().__init__(logger, None)
        self._state = state

    def isEnabledFor(self, level: int) -> bool:
        return not self._state.replaying and super().isEnabledFor(level)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return msg, kwargs


class Context:
    """What an `async def` handler receives.

    Attributes:
        event: the triggering event (the first, for a batch).
        events: every triggering event.
        step: the step API.
        group: parallel step groups.
        run_id: this run's id.
        logger: the client's logger; lines logged while the handler replays steps that ran
            before are dropped, so each line appears once per real execution.
        deps: what a `tideflow.Dependencies` middleware provides (None without one).
    """

    step: Step
    group: Group

    def __init__(
        self,
        *,
        event: Event,
        events: list[Event],
        run_id: str,
        state: Pass,
        attempt: int,
        logger: logging.Logger,
        publish: Publisher | None = None,
    ) -> None:
        self.event = event
        self.events = events
        self.run_id = run_id
        self.logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = ReplayLogger(
            logger, state
        )
        self.deps: Any = None
        self._state = state
        self._attempt = attempt
        self._publish = publish
        # A plain handler's thread publishes through the loop its context was made on.
        self._loop = _running_loop()
        self._attach_steps(state)

    def _attach_steps(self, state: Pass) -> None:
        self.step = Step(state)
        self.group = Group()

    async def publish(self, channel: Channel | str, topic: Topic | str, data: Any) -> None:
        """Publishes a realtime message to the subscribers of `channel`'s `topic`.

        The data is checked against the topic's schema, if it has one (raising `RealtimeError`).
        Code outside steps runs again on every replay; what it published is not published again.
        """
        message = self._message(channel, topic, data)
        if message is not None and self._publish is not None:
            await self._publish(message)

    def _message(self, channel: Channel | str, topic: Topic | str, data: Any) -> Any:
        name, typed = resolve_topic(channel, topic)
        message = rt.message(name, typed.name, typed.encode(data), self.run_id)
        inside_step = steps.current_step_attempt.get() is not None
        return message if inside_step or not self._state.replaying else None

    @property
    def attempt(self) -> int:
        """0-based attempt: of the executing step inside its body, else of the step about to run."""
        inside = steps.current_step_attempt.get()
        return self._attempt if inside is None else inside


class SyncContext(Context):
    """What a plain `def` handler receives: the same, with synchronous steps and groups.

    Annotate a plain handler's argument with it (`ctx: tideflow.SyncContext`) for type checkers.
    """

    # The same methods without `async`: a sync handler's context is still a Context.
    step: SyncStep  # type: ignore[assignment]
    group: SyncGroup  # type: ignore[assignment]

    def _attach_steps(self, state: Pass) -> None:
        self.step = SyncStep(state)
        self.group = SyncGroup()

    def publish(self, channel: Channel | str, topic: Topic | str, data: Any) -> None:  # type: ignore[override]
        """`Context.publish`, synchronous."""
        message = self._message(channel, topic, data)
        if message is not None and self._publish is not None:
            if self._loop is None:
                raise errors.RealtimeError("publish needs a context made inside an event loop")
            asyncio.run_coroutine_threadsafe(self._publish(message), self._loop).result()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
