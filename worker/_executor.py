"""Replays a handler against a run's stored steps and runs what comes next, several steps in a
row where it can (checkpointing), until the run must wait, retry, or has ended."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import logging
import time
from typing import Any

from tideflow import _steps as steps
from tideflow import errors
from tideflow._context import Context, SyncContext
from tideflow._core.durations import to_ms
from tideflow._event import Event
from tideflow._function import Function
from tideflow._steps import Interrupt, Pass, PlannedOp, StoredStep
from tideflow.store import models as m

logger = logging.getLogger(__name__)

MAX_STEPS_PER_JOB = 100
_SETTLE_ROUNDS = 3


@dataclasses.dataclass
class JobResult:
    steps: list[m.StepRecord] = dataclasses.field(default_factory=list)
    events: list[m.EventRecord] = dataclasses.field(default_factory=list)
    outcome: dict[str, Any] = dataclasses.field(default_factory=dict)


def _now_ms() -> int:
    return int(time.time() * 1000)


class Execution:
    def __init__(self, function: Function, state: m.RunState) -> None:
        self.function = function
        self.state = state
        self.memo: dict[str, StoredStep] = {
            key: StoredStep(step.status, step.output, step.error)
            for key, step in state.steps.items()
            if step.status in (m.COMPLETED, m.FAILED)
        }
        self.result = JobResult()

    async def execute(self) -> JobResult:
        executed = 0
        while True:
            state = Pass(run_id=self.state.run.run_id, app_id=self.function.app_id, memo=self.memo)
            finished = await self._replay(state)
            if finished is not None:
                self.result.outcome = finished
                return self.result
            runnable = [op for op in state.planned if op.op in (steps.OP_RUN, steps.OP_SEND_EVENT)]
            if not runnable:
                self.result.outcome = {
                    "kind": "ops",
                    "ops": [op.to_report() for op in state.planned],
                }
                return self.result
            if executed >= MAX_STEPS_PER_JOB:
                self.result.outcome = {"kind": "continue"}
                return self.result
            retries = await self._run_steps(runnable)
            executed += len(runnable)
            if retries:
                self.result.outcome = {"kind": "step_retry", "steps": retries}
                return self.result

    async def _replay(self, state: Pass) -> dict[str, Any] | None:
        """One pass of the handler: its outcome if it ended, None if it stopped at new steps."""
        ctx = self._context(state)
        try:
            if self.function.is_async:
                output = await self.function.handler(ctx)
            else:
                output = await asyncio.to_thread(self.function.handler, ctx)
        except Interrupt:
            # Parallel branches (asyncio.gather) plan their steps in the next loop turns.
            for _ in range(_SETTLE_ROUNDS):
                await asyncio.sleep(0)
            if state.fatal is not None:
                return {"kind": "failed", "error": errors.error_dict(state.fatal)}
            return None
        except (errors.NonRetriableError, errors.StepError) as exc:
            return {"kind": "failed", "error": errors.error_dict(exc)}
        except Exception as exc:  # noqa: BLE001 - any handler error is the run's error
            outcome: dict[str, Any] = {"kind": "error", "error": errors.error_dict(exc)}
            if isinstance(exc, errors.RetryAfterError):
                outcome["retry_after_ms"] = _retry_after_ms(exc)
            return outcome
        if state.fatal is not None:
            return {"kind": "failed", "error": errors.error_dict(state.fatal)}
        problem = _output_problem(output, "the handler's return value")
        if problem is not None:
            return {
                "kind": "failed",
                "error": {"name": "OutputError", "message": problem, "stack": None},
            }
        return {"kind": "completed", "output": output}

    def _context(self, state: Pass) -> Context:
        run = self.state.run
        events = [self._event(payload) for payload in run.events]
        context_class = Context if self.function.is_async else SyncContext
        return context_class(
            event=events[0],
            events=events,
            run_id=run.run_id,
            state=state,
            attempt=self.state.job.attempt,
            logger=self.function.logger,
        )

    def _event(self, payload: dict[str, Any]) -> Event:
        event = Event.model_validate(payload)
        model = self.function.schemas.get(event.name)
        if model is None:
            return event
        return event.model_copy(update={"data": model.model_validate(event.data)})

    async def _run_steps(self, ops: list[PlannedOp]) -> list[dict[str, Any]]:
        results = await asyncio.gather(*(self._run_step(op) for op in ops))
        return [retry for retry in results if retry is not None]

    async def _run_step(self, op: PlannedOp) -> dict[str, Any] | None:
        """Runs one step; returns a retry request if it failed and has attempts left."""
        started = _now_ms()
        if op.op == steps.OP_SEND_EVENT:
            self._send_events(op, started)
            return None
        previous = self.state.steps.get(op.hash)
        attempt = previous.attempt if previous is not None else 0
        token = steps.current_step_attempt.set(attempt)
        try:
            output = await _call(op)
        except Exception as exc:  # noqa: BLE001 - a step's error is recorded, retried or raised as StepError
            return self._step_failed(op, exc, attempt, started)
        finally:
            steps.current_step_attempt.reset(token)
        problem = _output_problem(output, f"step {op.name!r} output")
        if problem is not None:
            return self._step_failed(op, errors.NonRetriableError(problem), attempt, started)
        self._record(op, m.COMPLETED, attempt, started, output=output)
        return None

    def _step_failed(
        self, op: PlannedOp, exc: Exception, attempt: int, started: int
    ) -> dict[str, Any] | None:
        error = errors.error_dict(exc)
        if isinstance(exc, errors.NonRetriableError) or attempt >= self.function.retries:
            self._record(op, m.FAILED, attempt, started, error=error)
            return None
        retry: dict[str, Any] = {
            "hash": op.hash,
            "name": op.name,
            "attempt": attempt,
            "error": error,
            "started_at": started,
        }
        if isinstance(exc, errors.RetryAfterError):
            retry["retry_after_ms"] = _retry_after_ms(exc)
        return retry

    def _send_events(self, op: PlannedOp, started: int) -> None:
        now = _now_ms()
        ids = []
        for record in op.opts["events"]:
            ids.append(record["internal_id"])
            self.result.events.append(m.EventRecord.from_wire(record, now))
        self._record(op, m.COMPLETED, 0, started, output=ids)

    def _record(
        self,
        op: PlannedOp,
        status: str,
        attempt: int,
        started: int,
        *,
        output: Any = None,
        error: Any = None,
    ) -> None:
        self.memo[op.hash] = StoredStep(status, output, error)
        self.result.steps.append(
            m.StepRecord(
                hash=op.hash,
                name=op.name,
                op=op.op,
                status=status,
                attempt=attempt,
                output=output,
                error=error,
                started_at=started,
                ended_at=_now_ms(),
            )
        )


async def _call(op: PlannedOp) -> Any:
    assert op.handler is not None
    if inspect.iscoroutinefunction(op.handler):
        result = await op.handler(*op.args)
    else:
        result = await asyncio.to_thread(op.handler, *op.args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _output_problem(value: Any, what: str) -> str | None:
    try:
        size = len(json.dumps(value, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        return f"{what} is not JSON-serialisable: {exc}"
    if size > steps.MAX_STEP_OUTPUT_BYTES:
        return f"{what} is {size} bytes; the limit is {steps.MAX_STEP_OUTPUT_BYTES} (4 MiB)"
    return None


def _retry_after_ms(exc: errors.RetryAfterError) -> int:
    import datetime

    value = exc.retry_after
    if isinstance(value, datetime.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        return max(1, int(moment.timestamp() * 1000) - _now_ms())
    return max(1, to_ms(value, field="retry_after"))
