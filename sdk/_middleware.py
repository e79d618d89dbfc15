"""Middleware: hooks around each execution of a function, with inngest-py's lifecycle.

One execution (a "request" in Inngest's words) is one replay of the handler against the run's
stored steps plus the new step(s) it reaches, or its return. Hooks are called in this order:

1. `transform_input(ctx, function, steps)`: may change event data and memoized step outputs.
2. `before_memoization()`
3. (the handler replays its memoized steps)
4. `after_memoization()`: once every stored step has been returned to the handler.
5. `before_execution()`: new code runs from here (logs through `ctx.logger` appear from here).
6. (the new step's body runs, or the handler returns)
7. `after_execution()`
8. `transform_output(result)`: the step's (or the function's) output or error.
9. `before_response()`: the outcome is about to be reported.

`before_*` hooks and `transform_input` go through the middleware in the order given (client
middleware first, then the function's); `after_*` hooks and `transform_output` go in reverse,
so that each middleware wraps the ones after it. `before_send_events(events)` and
`after_send_events(result)` wrap `client.send` and `step.send_event`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from . import errors
from ._core import protocol

if TYPE_CHECKING:
    from ._client import Client
    from ._context import Context
    from ._event import Event
    from ._function import Function
    from ._steps import StoredStep


@dataclasses.dataclass(frozen=True)
class RawRequest:
    """What a middleware is given as `raw_request`: the step job being executed."""

    run_id: str
    function_id: str
    attempt: int


@dataclasses.dataclass
class StepInfo:
    """The step whose result `transform_output` sees: `id` (the user's step id), `name`, `op`,
    and for an `invoke` about to be asked for, `opts` (`{"payload": {"data": ...}}`, assignable,
    as in inngest-py)."""

    id: str
    name: str
    op: str
    opts: dict[str, Any] | None = None


@dataclasses.dataclass
class TransformOutputResult:
    """A step's or the function's result, as `transform_output` may change it.

    Attributes:
        output: the JSON output (assign to replace it).
        error: the exception, when the step or function failed.
        step: the step, or None for the function's own return.
    """

    output: Any
    error: BaseException | None
    step: StepInfo | None
    is_planned: bool = False
    """True for a step the scheduler is about to carry out (an `invoke`): no output yet."""

    def has_output(self) -> bool:
        """Whether there is an output (not an error, not a planned step) to transform."""
        return self.error is None and not self.is_planned


@dataclasses.dataclass
class SendEventsResult:
    """What `after_send_events` sees: the sent events' ids, in order."""

    ids: list[str]


class Middleware:
    """Async hooks around each execution; subclass it and override the hooks you need.

    Made per execution as `cls(client, raw_request)`. Hook order (see the module docs):
    `transform_input`, `before_memoization`, `after_memoization`, `before_execution`,
    `after_execution`, `transform_output`, `before_response`; `before_send_events` and
    `after_send_events` around each send. A hook that raises fails the run with a
    `MiddlewareError` naming the middleware (`transform_output` of a step fails that step's
    attempt instead, which is retried as usual).

    Args:
        client: the app's client.
        raw_request: the job being executed (`RawRequest`), or None around `client.send`.
    """

    def __init__(self, client: Client, raw_request: RawRequest | None) -> None:
        self.client = client
        self.raw_request = raw_request

    async def transform_input(
        self, ctx: Context, function: Function, steps: Mapping[str, StoredStep]
    ) -> None:
        """Before the handler: may replace `ctx.event.data`, `ctx.events` and step outputs."""

    async def before_memoization(self) -> None:
        """Before the handler replays its stored steps."""

    async def after_memoization(self) -> None:
        """After every stored step has been returned to the handler."""

    async def before_execution(self) -> None:
        """Before new code (code not run before in this run) executes."""

    async def after_execution(self) -> None:
        """After the new step's body ran, or the handler returned or raised."""

    async def transform_output(self, result: TransformOutputResult) -> None:
        """After a step or the function returned: may replace `result.output`."""

    async def before_response(self) -> None:
        """Before the execution's outcome is reported."""

    async def before_send_events(self, events: list[Event]) -> None:
        """Before events are sent; may change them in place."""

    async def after_send_events(self, result: SendEventsResult) -> None:
        """After events were sent."""


class MiddlewareSync:
    """`Middleware` with plain (synchronous) hooks; the same order and arguments."""

    def __init__(self, client: Client, raw_request: RawRequest | None) -> None:
        self.client = client
        self.raw_request = raw_request

    def transform_input(
        self, ctx: Context, function: Function, steps: Mapping[str, StoredStep]
    ) -> None:
        """Before the handler: may replace `ctx.event.data`, `ctx.events` and step outputs."""

    def before_memoization(self) -> None:
        """Before the handler replays its stored steps."""

    def after_memoization(self) -> None:
        """After every stored step has been returned to the handler."""

    def before_execution(self) -> None:
        """Before new code executes."""

    def after_execution(self) -> None:
        """After the new step's body ran, or the handler returned or raised."""

    def transform_output(self, result: TransformOutputResult) -> None:
        """After a step or the function returned: may replace `result.output`."""

    def before_response(self) -> None:
        """Before the execution's outcome is reported."""

    def before_send_events(self, events: list[Event]) -> None:
        """Before events are sent; may change them in place."""

    def after_send_events(self, result: SendEventsResult) -> None:
        """After events were sent."""


AnyMiddleware: TypeAlias = Middleware | MiddlewareSync
MiddlewareFactory: TypeAlias = Callable[..., AnyMiddleware]
"""A middleware class, or any callable `(client, raw_request) -> middleware`."""


class Chain:
    """Instances of a list of middleware, and the calling of one hook across all of them."""

    def __init__(self, instances: Sequence[AnyMiddleware]) -> None:
        self._instances = list(instances)

    @classmethod
    def start(
        cls, factories: Sequence[MiddlewareFactory], client: Client, raw: RawRequest | None
    ) -> Chain:
        """Makes this execution's instances. Raises `MiddlewareError` if one cannot be made."""
        instances = []
        for factory in factories:
            try:
                instances.append(factory(client, raw))
            except Exception as exc:
                name = getattr(factory, "__name__", repr(factory))
                raise errors.MiddlewareError(name, "__init__", exc) from exc
        return cls(instances)

    def __bool__(self) -> bool:
        return bool(self._instances)

    async def call(self, hook: str, *args: Any, reverse: bool = False) -> None:
        """Calls `hook` on each middleware; raises `MiddlewareError` naming the one that failed."""
        for instance in reversed(self._instances) if reverse else self._instances:
            try:
                result = getattr(instance, hook)(*args)
                if inspect.isawaitable(result):
                    await result
            except Exception as exc:
                raise errors.MiddlewareError(type(instance).__name__, hook, exc) from exc


class Lifecycle:
    """One execution's hooks, called once each at their point, whatever path the execution
    takes (a returned handler, new steps, an error)."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self._loop: asyncio.AbstractEventLoop | None = None
        self._done: set[str] = set()

    @classmethod
    def start(
        cls, factories: Sequence[MiddlewareFactory], client: Client | None, raw: RawRequest
    ) -> Lifecycle:
        if client is None or not factories:
            return cls(Chain([]))
        return cls(Chain.start(factories, client, raw))

    async def _once(self, hook: str, *args: Any, reverse: bool = False) -> None:
        if hook not in self._done:
            self._done.add(hook)
            await self.chain.call(hook, *args, reverse=reverse)

    async def begin(
        self, ctx: Context, function: Function, steps: Mapping[str, StoredStep]
    ) -> None:
        """Before the handler: `transform_input`, `before_memoization`, and with no stored
        steps at all, straight on to new code."""
        self._loop = asyncio.get_running_loop()
        await self._once("transform_input", ctx, function, steps)
        await self._once("before_memoization")
        if not steps:
            await self.new_code()

    async def new_code(self) -> None:
        """The handler is past its stored steps: `after_memoization`, `before_execution`."""
        await self._once("after_memoization", reverse=True)
        await self._once("before_execution")

    def new_code_blocking(self) -> None:
        """`new_code` from a plain handler's thread."""
        if not self.chain:
            return  # nothing to call: spare the hop to the event loop
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self.new_code(), self._loop).result()

    async def after_execution(self) -> None:
        await self.new_code()
        await self._once("after_execution", reverse=True)

    async def transform_output(
        self, output: Any, error: BaseException | None, step: StepInfo | None
    ) -> TransformOutputResult:
        """`after_execution` if still due, then `transform_output` on this result."""
        await self.after_execution()
        result = TransformOutputResult(output, error, step)
        if self.chain:
            await self.chain.call("transform_output", result, reverse=True)
        return result

    async def planned(
        self, requests: tuple[protocol.StepRequest, ...]
    ) -> tuple[protocol.StepRequest, ...]:
        """The steps asked of the scheduler, after `transform_output` has seen each invocation
        (and may have changed the data it sends)."""
        await self.after_execution()
        if not self.chain:
            return requests
        return tuple([await self._planned(request) for request in requests])

    async def _planned(self, request: protocol.StepRequest) -> protocol.StepRequest:
        if not isinstance(request.ask, protocol.Invoke):
            return request
        opts = {"payload": {"data": request.ask.data}}
        step = StepInfo(request.name, request.name, request.ask.op, opts)
        await self.chain.call(
            "transform_output", TransformOutputResult(None, None, step, True), reverse=True
        )
        data = (step.opts or opts).get("payload", {}).get("data", request.ask.data)
        return dataclasses.replace(request, ask=dataclasses.replace(request.ask, data=data))

    async def before_response(self) -> None:
        await self.after_execution()
        await self._once("before_response")

    def view(self, memo: dict[str, StoredStep]) -> dict[str, StoredStep]:
        """The stored steps this execution's handler sees: copies, when middleware may change
        them, so that a change lasts one execution."""
        if not self.chain:
            return memo
        return {key: dataclasses.replace(step) for key, step in memo.items()}


def as_events(records: Sequence[dict[str, Any]]) -> list[Event]:
    """Wire records as the `Event`s middleware sees."""
    from ._event import Event

    return [
        Event.model_validate({k: v for k, v in record.items() if k != "internal_id"})
        for record in records
    ]


def wire_records(
    events: Sequence[Event], originals: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Events (as middleware left them) back as wire records, keeping the stable ids of the
    records they came from."""
    from ._core.ids import derived_id

    records = []
    for index, event in enumerate(events):
        record = event.model_dump(mode="json")
        if index < len(originals):
            record["internal_id"] = originals[index]["internal_id"]
        else:
            record["internal_id"] = derived_id(originals[0]["internal_id"], str(index))
        records.append(record)
    return records


async def send_through(
    chain: Chain, events: list[Event], send: Callable[[list[Event]], Any]
) -> list[str]:
    """Sends `events` with `before_send_events` before and `after_send_events` after."""
    await chain.call("before_send_events", events)
    ids: list[str] = await send(events)
    await chain.call("after_send_events", SendEventsResult(list(ids)), reverse=True)
    return ids
