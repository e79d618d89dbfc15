"""Replays a handler against a run's stored steps and runs what comes next, several steps in a
row where it can (checkpointing), until the run must wait, retry, has ended, or its job must
hand it back."""

from __future__ import annotations

import asyncio
import datetime
import inspect
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from tideflow import Checkpointing, errors
from tideflow._core import protocol
from tideflow._core import replay as r
from tideflow._core.durations import to_ms
from tideflow.store import models as m

from ._checkpoint import Checkpointer

logger = logging.getLogger(__name__)

# Parallel branches (asyncio.gather) plan their steps in the loop turns after the first stops.
_SETTLE_ROUNDS = 3


def _now_ms() -> int:
    return int(time.time() * 1000)


class Execution:
    """One job's work on a run.

    Args:
        checkpointing: the function's policy; None runs one step (or parallel group) a job.
        checkpointer: where finished steps go; it writes them as the policy says.
        step_timeout_s: a step body running longer fails with `StepTimeout`.
        max_state_bytes: the most a run's step outputs may hold in all (JSON bytes); the step
            that would go over it fails the run with a `LimitError`.
        should_stop: asked before each next step: true when the run was cancelled, the lease
            was lost or the worker is shutting down; the job then hands the run back.
    """

    def __init__(
        self,
        function: r.Function,
        state: m.RunState,
        *,
        checkpointing: Checkpointing | None,
        checkpointer: Checkpointer,
        step_timeout_s: float,
        should_stop: Callable[[], bool],
        max_state_bytes: int = r.MAX_RUN_STATE_BYTES,
    ) -> None:
        self.function = function
        self.state = state
        self._checkpointing = checkpointing
        self._checkpointer = checkpointer
        self._step_timeout_s = step_timeout_s
        self._should_stop = should_stop
        self._hooks = r.Lifecycle(r.Chain([]))
        self.memo: dict[str, r.StoredStep] = {
            key: r.StoredStep(step.status, step.output, _error_dict(step.error))
            for key, step in state.steps.items()
            if step.status in (m.COMPLETED, m.FAILED)
        }
        self._max_state_bytes = max_state_bytes
        self._state_bytes = sum(
            _size(stored.output) for stored in self.memo.values() if stored.output is not None
        )
        self._fatal: errors.LimitError | None = None

    async def execute(self) -> protocol.Outcome:
        runtime_ms = self._checkpointing.max_runtime_ms if self._checkpointing else 0
        deadline = time.monotonic() + runtime_ms / 1000
        has_run = False
        while True:
            try:
                self._hooks = self._lifecycle()
                state = r.Pass(
                    run_id=self.state.run.run_id,
                    app_id=self.function.app_id,
                    memo=self._hooks.view(self.memo),
                    lifecycle=self._hooks,
                )
                outcome = await self._pass(state, has_run=has_run, deadline=deadline)
                await self._hooks.before_response()
            except errors.MiddlewareError as exc:
                return protocol.Failed(protocol.ErrorInfo.from_exception(exc))
            if outcome is not None:
                return outcome
            has_run = True

    def _lifecycle(self) -> r.Lifecycle:
        raw = r.RawRequest(self.state.run.run_id, self.function.id, self.state.job.attempt)
        return r.Lifecycle.start(self.function.middleware, self.function.client, raw)

    async def _pass(
        self, state: r.Pass, *, has_run: bool, deadline: float
    ) -> protocol.Outcome | None:
        """Replays the handler and runs the steps it reached; None to go on with another pass."""
        finished = await self._replay(state)
        if finished is not None:
            return finished
        local = [op for op in state.planned if op.is_local]
        if not local:
            return protocol.Suspended(
                await self._hooks.planned(tuple(o.request() for o in state.planned))
            )
        if has_run and (time.monotonic() >= deadline or self._must_stop()):
            return protocol.Continue()
        self._checkpointer.next_step()
        retries = await self._run_steps(local)
        if self._fatal is not None:
            return protocol.Failed(protocol.ErrorInfo.from_exception(self._fatal))
        if retries:
            return protocol.Retrying(tuple(retries))
        return None

    def _must_stop(self) -> bool:
        return self._checkpointer.is_lost or self._should_stop()

    async def _replay(self, state: r.Pass) -> protocol.Outcome | None:
        """One pass of the handler: its outcome if it ended, None if it stopped at new steps."""
        ctx = self._context(state)
        await self._hooks.begin(ctx, self.function, state.memo)
        r.apply_schemas(ctx, self.function.schemas)
        try:
            if self.function.is_async:
                output = await self.function.handler(ctx)
            else:
                output = await asyncio.to_thread(self.function.handler, ctx)
        except r.Interrupt:
            for _ in range(_SETTLE_ROUNDS):
                await asyncio.sleep(0)
            if state.fatal is not None:
                return protocol.Failed(protocol.ErrorInfo.from_exception(state.fatal))
            return None
        except (errors.NonRetriableError, errors.StepError) as exc:
            return protocol.Failed(protocol.ErrorInfo.from_exception(exc))
        except Exception as exc:  # noqa: BLE001 - any handler error is the run's error
            retry_after_ms = (
                _retry_after_ms(exc) if isinstance(exc, errors.RetryAfterError) else None
            )
            return protocol.Errored(protocol.ErrorInfo.from_exception(exc), retry_after_ms)
        if state.fatal is not None:
            return protocol.Failed(protocol.ErrorInfo.from_exception(state.fatal))
        output = (await self._hooks.transform_output(output, None, None)).output
        problem = _output_problem(output, "the handler's return value")
        if problem is not None:
            return protocol.Failed(protocol.ErrorInfo("OutputError", problem))
        return protocol.Completed(output)

    def _context(self, state: r.Pass) -> r.Context:
        run = self.state.run
        events = [r.Event.model_validate(payload) for payload in run.events]
        context_class = r.Context if self.function.is_async else r.SyncContext
        return context_class(
            event=events[0],
            events=events,
            run_id=run.run_id,
            state=state,
            attempt=self.state.job.attempt,
            logger=self.function.logger,
            publish=self.function.publish_realtime,
        )

    async def _run_steps(self, ops: list[r.PlannedOp]) -> list[protocol.StepRetry]:
        results = await asyncio.gather(*(self._run_step(op) for op in ops))
        return [retry for retry in results if retry is not None]

    async def _run_step(self, op: r.PlannedOp) -> protocol.StepRetry | None:
        """Runs one step; returns a retry request if it failed and has attempts left."""
        started = _now_ms()
        if op.op == protocol.OP_SEND_EVENT:
            await self._send_events(op, started)
            return None
        previous = self.state.steps.get(op.hash)
        attempt = previous.attempt if previous is not None else 0
        token = r.current_step_attempt.set(attempt)
        deadline = asyncio.timeout(self._step_timeout_s)
        try:
            async with deadline:
                output = await _call(op)
            info = r.StepInfo(op.name, op.name, op.op)
            output = (await self._hooks.transform_output(output, None, info)).output
        except Exception as exc:  # noqa: BLE001 - a step's error is recorded, retried or raised as StepError
            if isinstance(exc, TimeoutError) and deadline.expired():
                exc = errors.StepTimeout(
                    f"step {op.name!r} was still running after {self._step_timeout_s:g}s "
                    "(TIDEFLOW_STEP_TIMEOUT_S)"
                )
            return self._step_failed(op, exc, attempt, started)
        finally:
            r.current_step_attempt.reset(token)
        problem = _output_problem(output, f"step {op.name!r} output")
        if problem is not None:
            return self._step_failed(op, errors.NonRetriableError(problem), attempt, started)
        if not self._holds(op, output):
            return None
        self._record(op, m.COMPLETED, attempt, started, output=output)
        return None

    def _holds(self, op: r.PlannedOp, output: Any) -> bool:
        """Whether the run's state has room for this output; if not, the run is to fail."""
        size = _size(output)
        if self._state_bytes + size <= self._max_state_bytes:
            self._state_bytes += size
            return True
        self._fatal = errors.LimitError(
            f"step {op.name!r} output ({size} bytes) would bring this run's state to "
            f"{self._state_bytes + size} bytes; the limit is {self._max_state_bytes} bytes of "
            "step outputs a run (TIDEFLOW_MAX_RUN_STATE_BYTES)"
        )
        return False

    def _step_failed(
        self, op: r.PlannedOp, exc: Exception, attempt: int, started: int
    ) -> protocol.StepRetry | None:
        error = protocol.ErrorInfo.from_exception(exc)
        if isinstance(exc, errors.NonRetriableError) or attempt >= self.function.retries:
            self._record(op, m.FAILED, attempt, started, error=error)
            return None
        retry_after_ms = _retry_after_ms(exc) if isinstance(exc, errors.RetryAfterError) else None
        return protocol.StepRetry(op.hash, op.name, attempt, error, started, retry_after_ms)

    async def _send_events(self, op: r.PlannedOp, started: int) -> None:
        async def send(changed: list[r.Event]) -> list[str]:
            now = _now_ms()
            records = r.wire_records(changed, op.events)
            events = [m.EventRecord.from_wire(record, now) for record in records]
            ids = [e.internal_id for e in events]
            self._record(op, m.COMPLETED, 0, started, output=ids, events=events)
            return ids

        await r.send_through(self._hooks.chain, r.as_events(op.events), send)

    def _record(
        self,
        op: r.PlannedOp,
        status: str,
        attempt: int,
        started: int,
        *,
        output: Any = None,
        error: protocol.ErrorInfo | None = None,
        events: list[m.EventRecord] | None = None,
    ) -> None:
        self.memo[op.hash] = r.StoredStep(status, output, _error_dict(error))
        step = m.StepRecord(
            hash=op.hash,
            name=op.name,
            op=op.op,
            status=status,
            attempt=attempt,
            output=output,
            error=error,
            started_at=started,
            ended_at=_now_ms(),
            input=op.input,
        )
        self._checkpointer.add(step, events or [])


def _error_dict(error: protocol.ErrorInfo | None) -> dict[str, Any] | None:
    return None if error is None else error.to_dict()


async def _call(op: r.PlannedOp) -> Any:
    assert op.handler is not None
    if inspect.iscoroutinefunction(op.handler):
        result = await op.handler(*op.args)
    else:
        result = await asyncio.to_thread(op.handler, *op.args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _size(value: Any) -> int:
    """JSON bytes, as the store keeps them (raises for what JSON cannot hold)."""
    return len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())


def _output_problem(value: Any, what: str) -> str | None:
    try:
        size = _size(value)
    except (TypeError, ValueError) as exc:
        return f"{what} is not JSON-serialisable: {exc}"
    if size > r.MAX_STEP_OUTPUT_BYTES:
        return f"{what} is {size} bytes; the limit is {r.MAX_STEP_OUTPUT_BYTES} (4 MiB)"
    return None


def _retry_after_ms(exc: errors.RetryAfterError) -> int:
    value = exc.retry_after
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return max(1, int(moment.timestamp() * 1000) - _now_ms())
    return max(1, to_ms(value, field="retry_after"))
