"""Writes a job's finished steps while its next steps run (checkpointing)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tideflow import errors
from tideflow.store import models as m

logger = logging.getLogger(__name__)

Write = Callable[[list[m.StepRecord], list[m.EventRecord]], Awaitable[bool]]


class Checkpointer:
    """Buffers finished steps (and the events their `send_event` produced) and writes them in
    the background, one write at a time, so a write overlaps the next step's body instead of
    delaying it.

    A write starts as the next step starts (`next_step`) once `buffered_steps` results wait, or
    `max_interval_ms` after the first of them finished. What is still buffered when the job ends
    goes in its final write (`take_rest`): a run whose handler returns right after its last step
    costs no write of its own for that step. A write that finds the job's lease gone (the run was cancelled, or the lease
    lapsed and the job went elsewhere) sets `is_lost`: the job must stop.

    Args:
        write: stores steps and events if the lease is still held; False if it is not.
        buffered_steps: None to never write early (everything goes in the final write).
    """

    def __init__(
        self,
        write: Write,
        *,
        buffered_steps: int | None,
        max_interval_ms: int,
        on_step: Callable[[m.StepRecord], None] | None = None,
    ) -> None:
        self._write = write
        self._on_step = on_step
        self._buffered_steps = buffered_steps
        self._max_interval_s = max_interval_ms / 1000
        self._steps: list[m.StepRecord] = []
        self._events: list[m.EventRecord] = []
        self._is_due = False
        self._timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self.is_lost = False

    def add(self, step: m.StepRecord, events: list[m.EventRecord]) -> None:
        if self._on_step is not None:
            self._on_step(step)
        self._steps.append(step)
        self._events.extend(events)
        if self._buffered_steps is not None and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._max_interval_s, self._due)

    def next_step(self) -> None:
        """Called as the job starts its next step: writes what is due, while that step runs."""
        if self._should_write():
            self._start()

    def _due(self) -> None:
        self._timer = None
        self._is_due = True
        self._start()

    def _should_write(self) -> bool:
        if not self._steps or self.is_lost or self._buffered_steps is None:
            return False
        return self._is_due or len(self._steps) >= self._buffered_steps

    def _start(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_while_due(), name="tideflow-checkpoint")

    async def _write_while_due(self) -> None:
        while self._should_write():
            steps, events = self._steps, self._events
            self._steps, self._events, self._is_due = [], [], False
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                written = await self._write(steps, events)
            except errors.StoreError as exc:
                # Kept for the job's final write, which retries or fails the job as a whole.
                logger.warning("a checkpoint write failed (%s); the job's last write retries", exc)
                self._steps, self._events = steps + self._steps, events + self._events
                return
            if not written:
                self.is_lost = True

    async def take_rest(self) -> tuple[list[m.StepRecord], list[m.EventRecord]]:
        """Waits for the write in flight; returns what no write has taken."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._writer is not None:
            await self._writer
        steps, events = self._steps, self._events
        self._steps, self._events = [], []
        return steps, events

    async def abandon(self) -> None:
        """Stops writing: the job is given up (its lease will lapse)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
