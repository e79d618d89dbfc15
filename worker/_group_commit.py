"""Group commit: concurrent jobs' store writes of one kind share a statement.

A worker runs many jobs at once, and each claims its job and writes its end. One statement per
job costs a round trip and a commit each; here a call waits while the batch before it is being
written and then goes with every call that arrived meanwhile. An idle worker's single call goes
at once (after one turn of the event loop), so latency grows only with load.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

_T = TypeVar("_T")
_R = TypeVar("_R")


class GroupCommit(Generic[_T, _R]):
    """Batches `submit` calls into calls of `write`, which answers one result per item in order.

    Args:
        write: writes a batch; an exception it raises is raised by every call of that batch.
        key: items with equal keys never share a batch (the later one waits for the next).
        max_size: the most items in one batch.
    """

    def __init__(
        self,
        write: Callable[[list[_T]], Awaitable[Sequence[_R]]],
        *,
        key: Callable[[_T], Hashable] | None = None,
        max_size: int = 256,
    ) -> None:
        self._write = write
        self._key = key
        self._max_size = max_size
        self._waiting: list[tuple[_T, asyncio.Future[_R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: _T) -> _R:
        future: asyncio.Future[_R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="tideflow-group-commit")
        return await future

    async def close(self) -> None:
        """Waits for the batch being written, if any."""
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._task

    def _next_batch(self) -> list[tuple[_T, asyncio.Future[_R]]]:
        batch: list[tuple[_T, asyncio.Future[_R]]] = []
        rest: list[tuple[_T, asyncio.Future[_R]]] = []
        keys: set[Hashable] = set()
        for item, future in self._waiting:
            if future.done():  # its caller was cancelled: nothing to write for it
                continue
            key = self._key(item) if self._key is not None else None
            if len(batch) >= self._max_size or (key is not None and key in keys):
                rest.append((item, future))
                continue
            if key is not None:
                keys.add(key)
            batch.append((item, future))
        self._waiting = rest
        return batch

    async def _drain(self) -> None:
        while batch := self._next_batch():
            try:
                results = await self._write([item for item, _ in batch])
            except asyncio.CancelledError:
                for _, future in [*batch, *self._waiting]:
                    future.cancel()
                self._waiting = []
                raise
            except Exception as exc:  # noqa: BLE001 - handed to every caller of the batch
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
