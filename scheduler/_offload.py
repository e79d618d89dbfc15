"""Decisions about offloaded steps (`fetch`, `ai.infer`): the engine makes their request while
the run waits, holding no job and so no worker and no concurrency slot.

The step waits like a sleep: a Waiting step, a wait, and a deadline timer, with the request
published to the app's offload queue once that is committed. Its result resolves the wait
(once: a redelivered request's second result finds none), or counts as a failed attempt: the
wait ends and the run is dispatched again after the retry backoff, and its handler asks for the
request anew (so an API key it holds need not be kept anywhere). A request lost on its way (a
publish that failed) is found by its deadline, which counts as a failed attempt too.
"""

from __future__ import annotations

import dataclasses
import random

from tideflow._core import protocol
from tideflow._core.ids import new_id
from tideflow._core.protocol import ErrorInfo
from tideflow.store import models as m

from . import _backoff as backoff

LOST_GRACE_MS = 5 * 60 * 1000
"""How long past its timeout an offloaded request may stay unanswered before it is taken for
lost: time enough to wait for a free place in a busy offload loop."""


def wait(
    run: m.RunRecord,
    request: protocol.StepRequest,
    ask: protocol.Offload,
    change: m.AddWait,
    now: int,
    attempt: int,
) -> m.AddWait:
    """`change` completed for an offloaded step: its recorded input, its wait, its deadline and
    its request (attempt `attempt`)."""
    change.step.input = protocol.recorded_input(ask)
    change.step.attempt = attempt
    change.wait = m.WaitRecord(run.run_id, request.hash, m.WAIT_OFFLOAD)
    change.timer = m.TimerRecord(
        new_id(now),
        m.TIMER_WAIT,
        run.run_id,
        request.hash,
        now + ask.timeout_ms + LOST_GRACE_MS,
        {
            "op": ask.op,
            "function_id": run.function_id,
            "name": request.name,
            "attempt": attempt,
        },
    )
    change.offload = protocol.OffloadJob(
        run.run_id, run.function_id, run.app_id, request.hash, request.name, attempt, ask
    )
    return change


def on_result(
    result: protocol.OffloadResult,
    retries: int,
    now: int,
    backoff_base_ms: int,
    rng: random.Random | None,
) -> list[m.Change]:
    if result.error is None:
        return [m.ResolveStep(result.run_id, result.step_hash, output=result.output)]
    if result.is_retriable and result.attempt < retries:
        delay = backoff.retry_delay_ms(result.attempt, backoff_base_ms, rng=rng)
        retry = _Attempt(result.run_id, result.step_hash, result.name, result.op, result.attempt)
        return [retry.failed(result.error, now, due_at=now + delay)]
    return [m.ResolveStep(result.run_id, result.step_hash, error=result.error)]


def lost(timer: m.TimerRecord, retries: int, now: int) -> list[m.Change]:
    """An offloaded request unanswered past its deadline: a failed attempt."""
    payload = timer.payload
    attempt = int(payload.get("attempt", 0))
    error = ErrorInfo("FetchTimeoutError", "the offloaded request was not answered in time")
    if attempt < retries:
        name, op = str(payload.get("name", "")), str(payload.get("op"))
        retry = _Attempt(timer.run_id, timer.step_hash, name, op, attempt)
        return [retry.failed(error, now, due_at=now)]
    return [m.ResolveStep(timer.run_id, timer.step_hash, error=error)]


@dataclasses.dataclass(frozen=True)
class _Attempt:
    run_id: str
    step_hash: str
    name: str
    op: str
    attempt: int

    def failed(self, error: ErrorInfo, now: int, *, due_at: int) -> m.ScheduleRetry:
        """This attempt failed: the step's wait ends, and the run is dispatched at `due_at`."""
        step = m.StepRecord(
            hash=self.step_hash,
            name=self.name,
            op=self.op,
            status=m.STEP_RUNNING,
            attempt=self.attempt + 1,
            error=error,
        )
        timer = m.TimerRecord(
            new_id(now),
            m.TIMER_RETRY,
            self.run_id,
            f"{self.step_hash}:{self.attempt + 1}",
            due_at,
            {"attempt": self.attempt + 1},
        )
        return m.ScheduleRetry(self.run_id, timer, step=step, require_wait=True)
