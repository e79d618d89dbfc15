"""Unit-testing one function in-process: mocked steps and invokes, no database, no broker, no
waiting. The handler is replayed against its results as the worker replays it (the same `Pass`
and `Interrupt`), so a test sees the same step semantics."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _middleware as mw
from . import errors
from ._context import Context, SyncContext
from ._core import protocol
from ._core.ids import new_id
from ._event import Event, apply_schemas, parse_events
from ._function import Function
from ._steps import Interrupt, Pass, PlannedOp, StoredStep, current_step_attempt
from ._triggers import TriggerEvent

Mock = Any
"""A step's or an invocation's stand-in: a value, or a callable making it."""


@dataclasses.dataclass(frozen=True)
class StepCall:
    """One step as it was carried out: its id (`name:n` for the n-th repeat), op and arguments
    (a `run` step's arguments, an invocation's data, or a send's events)."""

    id: str
    op: str
    args: tuple[Any, ...] = ()


@dataclasses.dataclass
class TestResult:
    """What `TestEngine.execute` found.

    Attributes:
        result: the handler's return value (for `execute_step`, that step's output).
        error: what the handler raised (a `StepError` for a step out of attempts), or None.
        state: step id -> output, for every step that completed (`name:n` for repeats).
        calls: the steps carried out, in order (a retried step once per attempt).
        published: the realtime messages `ctx.publish` sent, in order.
    """

    __test__ = False

    result: Any = None
    error: BaseException | None = None
    state: dict[str, Any] = dataclasses.field(default_factory=dict)
    calls: list[StepCall] = dataclasses.field(default_factory=list)
    published: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class _Stop(Exception):
    """The step `execute_step` was asked for has been carried out."""


class TestEngine:
    """Runs one function in this process, for unit tests.

    Sleeps and waits return at once; a `wait_for_event` or `wait_for_signal` with no mock times
    out (returns None); an `invoke` needs a mock, and so does a `fetch` or `ai.infer` step (no
    request is made: a callable mock gets the request as the step records it, without its
    key). A `run` or `ai.wrap` step without a mock runs its handler, retried at once up to the
    function's `retries`. Middleware runs as on a worker.

    Args:
        function: the function under test.

    Example:
        >>> t = TestEngine(send_welcome)
        >>> outcome = await t.execute(events=[{"name": "shop/user.created", "data": {...}}],
        ...                           steps={"load-user": {"id": 1}})
    """

    __test__ = False

    def __init__(self, function: Function) -> None:
        if not isinstance(function, Function):
            raise errors.ConfigError(f"TestEngine needs a tideflow.Function, got {function!r}")
        self.function = function

    async def execute(
        self,
        *,
        events: Sequence[Event | dict[str, Any]] | None = None,
        steps: Mapping[str, Mock] | None = None,
        invokes: Mapping[str, Mock] | None = None,
    ) -> TestResult:
        """Runs the handler to its end with these triggering events and mocks.

        Args:
            events: the triggering events (default: one empty event of the first trigger).
            steps: step id -> mock; a callable mock of a `run` step gets the step's arguments.
            invokes: function id (`fn_id` or `<app_id>-<fn_id>`) -> mock; a callable gets the
                invocation's data.
        """
        return await _Run(self.function, events, steps, invokes, None).execute()

    async def execute_step(
        self,
        step_id: str,
        *,
        events: Sequence[Event | dict[str, Any]] | None = None,
        steps: Mapping[str, Mock] | None = None,
        invokes: Mapping[str, Mock] | None = None,
    ) -> TestResult:
        """Runs the handler until the step `step_id` has been carried out; `.result` is its
        output. Raises `TideflowError` if the handler ends without reaching it."""
        return await _Run(self.function, events, steps, invokes, step_id).execute()

    def execute_sync(self, **kwargs: Any) -> TestResult:
        """`execute` for plain (non-async) tests."""
        return _blocking(lambda: self.execute(**kwargs))

    def execute_step_sync(self, step_id: str, **kwargs: Any) -> TestResult:
        """`execute_step` for plain tests."""
        return _blocking(lambda: self.execute_step(step_id, **kwargs))


class _Run:
    def __init__(
        self,
        function: Function,
        events: Sequence[Event | dict[str, Any]] | None,
        steps: Mapping[str, Mock] | None,
        invokes: Mapping[str, Mock] | None,
        target: str | None,
    ) -> None:
        self.function = function
        given = parse_events(list(events)) if events else [_default_event(function)]
        self.events = [e if e.id else e.model_copy(update={"id": new_id()}) for e in given]
        self.steps = dict(steps or {})
        self.invokes = dict(invokes or {})
        self.target = target
        self.run_id = new_id()
        self.memo: dict[str, StoredStep] = {}
        self.outcome = TestResult()
        self.hooks = mw.Lifecycle(mw.Chain([]))
        self._labels: dict[str, str] = {}
        self._occurrences: dict[str, int] = {}

    async def execute(self) -> TestResult:
        while True:  # each pass memoizes at least one step, and a run has at most 1,000
            raw = mw.RawRequest(self.run_id, self.function.id, 0)
            self.hooks = mw.Lifecycle.start(self.function.middleware, self.function.client, raw)
            state = Pass(
                run_id=self.run_id,
                app_id=self.function.app_id,
                memo=self.hooks.view(self.memo),
                lifecycle=self.hooks,
            )
            try:
                ended = await self._replay(state)
                if not ended:
                    await asyncio.gather(*(self._carry_out(op) for op in state.planned))
                await self.hooks.before_response()
            except _Stop:
                return self.outcome
            except errors.MiddlewareError as exc:
                self.outcome.error = exc
                return self.outcome
            if ended:
                if self.target is not None:
                    raise errors.TideflowError(
                        f"the handler ended without reaching step {self.target!r}"
                    )
                return self.outcome

    async def _replay(self, state: Pass) -> bool:
        """One pass of the handler; True once it has returned or raised."""
        context_class = Context if self.function.is_async else SyncContext
        ctx = context_class(
            event=self.events[0],
            events=list(self.events),
            run_id=self.run_id,
            state=state,
            attempt=0,
            logger=self.function.logger,
            publish=self._publish,
        )
        await self.hooks.begin(ctx, self.function, state.memo)
        apply_schemas(ctx, self.function.schemas)
        try:
            if self.function.is_async:
                output = await self.function.handler(ctx)
            else:
                output = await asyncio.to_thread(self.function.handler, ctx)
        except Interrupt:
            for _ in range(3):  # parallel branches plan their steps in the next loop turns
                await asyncio.sleep(0)
            if state.fatal is not None:
                self.outcome.error = state.fatal
                return True
            return False
        except Exception as exc:  # noqa: BLE001 - the handler's error is the result
            self.outcome.error = exc
            await self.hooks.after_execution()
            return True
        self.outcome.result = (await self.hooks.transform_output(output, None, None)).output
        return True

    async def _carry_out(self, op: PlannedOp) -> None:
        label = self._label(op)
        mocked = label in self.steps or op.name in self.steps
        mock = self.steps.get(label, self.steps.get(op.name))
        if op.is_local and op.op != protocol.OP_SEND_EVENT:
            # run and ai.wrap steps, and an offloaded step refused for its bad input.
            await self._run_step(op, label, mock, mocked)
        else:
            self.outcome.calls.append(StepCall(label, op.op, _call_args(op)))
            try:
                output = await self._ask(op, mock, mocked)
            except errors.ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - a mock's error fails its step
                self._fail(op, exc)
            else:
                self._complete(op, label, output)
        if self.target is not None and self.target in (label, op.name):
            self.outcome.result = self.outcome.state.get(label)
            raise _Stop()

    async def _run_step(self, op: PlannedOp, label: str, mock: Mock, mocked: bool) -> None:
        for attempt in range(self.function.retries + 1):
            self.outcome.calls.append(StepCall(label, op.op, op.args))
            token = current_step_attempt.set(attempt)
            try:
                if mocked:
                    output = await _resolve(mock, *op.args) if callable(mock) else mock
                else:
                    assert op.handler is not None
                    output = await _resolve(op.handler, *op.args)
                info = mw.StepInfo(op.name, op.name, op.op)
                output = (await self.hooks.transform_output(output, None, info)).output
            except Exception as exc:  # noqa: BLE001 - retried like the worker retries it
                if isinstance(exc, errors.NonRetriableError) or attempt == self.function.retries:
                    self._fail(op, exc)
                    return
                continue
            finally:
                current_step_attempt.reset(token)
            self._complete(op, label, output)
            return

    async def _ask(self, op: PlannedOp, mock: Mock, mocked: bool) -> Any:
        if op.op == protocol.OP_SEND_EVENT:
            return await mw.send_through(self.hooks.chain, mw.as_events(op.events), _ids(op))
        if op.op == protocol.OP_INVOKE:
            assert isinstance(op.ask, protocol.Invoke)
            return await self._invoke(op.ask)
        if isinstance(op.ask, (protocol.Fetch, protocol.AiInfer)):
            return await self._offload(op, op.ask, mock, mocked)
        if not mocked:
            return None  # sleeps pass at once; unmocked waits time out
        value = await _resolve(mock) if callable(mock) else mock
        if op.op == protocol.OP_WAIT_FOR_EVENT and isinstance(value, (dict, Event)):
            event = Event.model_validate(value) if isinstance(value, dict) else value
            return (event if event.id else event.model_copy(update={"id": new_id()})).model_dump(
                mode="json"
            )
        return value

    async def _offload(self, op: PlannedOp, ask: protocol.Offload, mock: Mock, mocked: bool) -> Any:
        # No request leaves a unit test: a fetch or ai.infer step needs its mock (a value, or
        # a callable given the request as the step records it).
        if not mocked:
            raise errors.ConfigError(
                f"{op.op} step {op.name!r} has no mock: pass steps={{{op.name!r}: ...}}"
            )
        return await _resolve(mock, protocol.recorded_input(ask)) if callable(mock) else mock

    async def _invoke(self, ask: protocol.Invoke) -> Any:
        short = ask.function_id.removeprefix(f"{self.function.app_id}-")
        for key in (ask.function_id, short):
            if key in self.invokes:
                mock = self.invokes[key]
                return await _resolve(mock, ask.data) if callable(mock) else mock
        raise errors.ConfigError(
            f"invoke of {ask.function_id!r} has no mock: pass invokes={{{short!r}: ...}}"
        )

    async def _publish(self, message: dict[str, Any]) -> None:
        self.outcome.published.append(message)

    def _label(self, op: PlannedOp) -> str:
        label = self._labels.get(op.hash)
        if label is None:
            count = self._occurrences.get(op.name, 0)
            self._occurrences[op.name] = count + 1
            label = op.name if count == 0 else f"{op.name}:{count}"
            self._labels[op.hash] = label
        return label

    def _complete(self, op: PlannedOp, label: str, output: Any) -> None:
        self.memo[op.hash] = StoredStep("Completed", output)
        self.outcome.state[label] = output

    def _fail(self, op: PlannedOp, exc: BaseException) -> None:
        error = protocol.ErrorInfo.from_exception(exc)
        self.memo[op.hash] = StoredStep("Failed", None, error.to_dict())


def _ids(op: PlannedOp) -> Callable[[list[Event]], Any]:
    async def send(events: list[Event]) -> list[str]:
        return [record["internal_id"] for record in mw.wire_records(events, op.events)]

    return send


def _call_args(op: PlannedOp) -> tuple[Any, ...]:
    if isinstance(op.ask, protocol.Invoke):
        return (op.ask.data,)
    if op.op == protocol.OP_SEND_EVENT:
        return tuple(mw.as_events(op.events))
    if isinstance(op.ask, (protocol.Fetch, protocol.AiInfer)):
        return (protocol.recorded_input(op.ask),)
    return ()


async def _resolve(call: Callable[..., Any], *args: Any) -> Any:
    if inspect.iscoroutinefunction(call):
        return await call(*args)
    result = call(*args)
    return await result if inspect.isawaitable(result) else result


def _default_event(function: Function) -> Event:
    for trigger in function.triggers:
        if isinstance(trigger, TriggerEvent):
            return Event(name=trigger.event, id=new_id())
    return Event(name="tideflow/scheduled.timer", id=new_id())


def _blocking(make: Callable[[], Any]) -> TestResult:
    outcome: list[TestResult] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(asyncio.run(make()))
        except BaseException as exc:  # noqa: BLE001 - handed back to the calling thread
            failure.append(exc)

    # A thread of its own, so that the sync form works inside a running event loop too.
    thread = threading.Thread(target=target, name="tideflow-test-engine")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]
