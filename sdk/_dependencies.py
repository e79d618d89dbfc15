"""Dependency injection: shared objects (an HTTP client, a database pool) made once per process
and handed to every handler as `ctx.deps`."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

from ._middleware import Middleware, RawRequest

if TYPE_CHECKING:
    from ._client import Client
    from ._context import Context
    from ._function import Function
    from ._steps import StoredStep

T = TypeVar("T")


class Dependencies(Generic[T]):
    """A middleware giving handlers `ctx.deps`: the value `make()` returns, made once per
    process, on the first execution that needs it, and shared by every execution after.

    `make` may be `async`. Pass the object itself as middleware; `deps.of(ctx)` is the same value
    as `ctx.deps`, typed:

        @dataclasses.dataclass
        class Deps:
            http: httpx.AsyncClient

        deps = tideflow.Dependencies(lambda: Deps(http=httpx.AsyncClient()))
        client = tideflow.Client(app_id="shop", middleware=[deps])

        @client.create_function(...)
        async def fetch_user(ctx: tideflow.Context) -> dict:
            http = deps.of(ctx).http
    """

    @overload
    def __init__(self, make: Callable[[], Awaitable[T]]) -> None: ...

    @overload
    def __init__(self, make: Callable[[], T]) -> None: ...

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._made: list[T] = []
        self._lock: asyncio.Lock | None = None

    def __call__(self, client: Client, raw_request: RawRequest | None) -> Middleware:
        return DependenciesMiddleware(client, raw_request, self)

    @property
    def __name__(self) -> str:
        return "Dependencies"

    async def get(self) -> T:
        """The shared value, made by the first call."""
        if self._made:
            return self._made[0]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._made:
                value = self._make()
                made: T = await value if inspect.isawaitable(value) else value
                self._made.append(made)
        return self._made[0]

    def of(self, ctx: Context) -> T:
        """`ctx.deps`, typed as what `make` returns."""
        value: T = ctx.deps
        return value


class DependenciesMiddleware(Middleware):
    def __init__(
        self, client: Client, raw_request: RawRequest | None, deps: Dependencies[Any]
    ) -> None:
        super().__init__(client, raw_request)
        self._deps = deps

    async def transform_input(
        self, ctx: Context, function: Function, steps: Mapping[str, StoredStep]
    ) -> None:
        ctx.deps = await self._deps.get()
