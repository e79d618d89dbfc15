"""Decisions: what each event, job outcome and timer changes. Pure functions of their inputs
and `now`; the scheduler applies the changes in one transaction."""

from __future__ import annotations

import random
from typing import Any

from tideflow import _function as fn
from tideflow import _steps as steps
from tideflow._core.expressions import compile_expression
from tideflow._core.ids import derived_id, new_id
from tideflow.store import models as m

from . import _backoff as backoff
from . import _system_events as system_events
from ._registry import Registry


def plan_event(
    event: m.EventRecord, registry: Registry, waits: list[m.WaitRecord]
) -> list[m.Change]:
    payload = event.payload()
    changes: list[m.Change] = []
    if event.target is not None:
        changes.extend(_targeted_run(event, registry, payload))
    else:
        for spec in registry.matching(event.name, payload):
            if _is_about_itself(event, spec.function_id):
                continue
            changes.append(
                m.CreateRun(
                    run_id=derived_id(event.internal_id, spec.function_id),
                    function_id=spec.function_id,
                    app_id=spec.app_id,
                    event_id=event.internal_id,
                    events=[payload],
                )
            )
    for wait in waits:
        if wait.event_name != event.name:
            continue
        if wait.if_exp is None or compile_expression(wait.if_exp).matches(
            {"event": wait.run_event or {}, "async": payload}
        ):
            changes.append(m.ResolveStep(wait.run_id, wait.step_hash, output=payload))
    return changes


def _targeted_run(
    event: m.EventRecord, registry: Registry, payload: dict[str, Any]
) -> list[m.Change]:
    target = event.target or {}
    spec = registry.get(target["function_id"])
    parent = target.get("parent")
    if spec is None:
        if parent is None:
            return []
        error = {
            "name": "FunctionNotFoundError",
            "message": f"no function {target['function_id']!r} is registered",
            "stack": None,
        }
        return [m.ResolveStep(parent["run_id"], parent["step_hash"], error=error)]
    return [
        m.CreateRun(
            run_id=derived_id(event.internal_id, spec.function_id),
            function_id=spec.function_id,
            app_id=spec.app_id,
            event_id=event.internal_id,
            events=[payload],
            parent=parent,
        )
    ]


def _is_about_itself(event: m.EventRecord, function_id: str) -> bool:
    # A function triggered by run events would otherwise trigger itself forever.
    return (
        event.name.startswith("tideflow/function.")
        and isinstance(event.data, dict)
        and event.data.get("function_id") == function_id
    )


def plan_outcome(
    outcome: m.JobOutcome,
    registry: Registry,
    *,
    now: int,
    backoff_base_ms: int,
    rng: random.Random | None = None,
) -> list[m.Change]:
    run, body = outcome.run, outcome.outcome
    kind = body["kind"]
    if kind == "completed":
        return _finish(run, registry, m.COMPLETED, now, output=body.get("output"))
    if kind == "failed":
        return _finish(run, registry, m.FAILED, now, error=body["error"])
    if kind == "continue":
        return [m.Dispatch(run.run_id)]
    if kind == "ops":
        return [_wait_change(run, op, now) for op in body["ops"]]
    spec = registry.get(run.function_id)
    retries = spec.retries if spec is not None else 0
    if kind == "error":
        if run.attempt >= retries:
            return _finish(run, registry, m.FAILED, now, error=body["error"])
        delay = body.get("retry_after_ms") or backoff.retry_delay_ms(
            run.attempt, backoff_base_ms, rng=rng
        )
        attempt = run.attempt + 1
        timer = m.TimerRecord(
            new_id(now),
            m.TIMER_RETRY,
            run.run_id,
            f"run:{attempt}",
            now + delay,
            {"attempt": attempt},
        )
        return [m.ScheduleRetry(run.run_id, timer, run_attempt=attempt)]
    if kind == "step_retry":
        return [_step_retry(run, failed, now, backoff_base_ms, rng) for failed in body["steps"]]
    raise ValueError(f"unknown outcome kind {kind!r}")


def _finish(
    run: m.RunRecord,
    registry: Registry,
    status: str,
    now: int,
    *,
    output: Any = None,
    error: Any = None,
) -> list[m.Change]:
    events = system_events.finish_events(run, status, now, output=output, error=error)
    quiet = not any(registry.matching(event.name, event.payload()) for event in events)
    return [
        m.FinishRun(run.run_id, status, output=output, error=error),
        m.AddEvents(events, quiet=quiet),
    ]


def _step_retry(
    run: m.RunRecord,
    failed: dict[str, Any],
    now: int,
    backoff_base_ms: int,
    rng: random.Random | None,
) -> m.Change:
    attempt = int(failed["attempt"])
    delay = failed.get("retry_after_ms") or backoff.retry_delay_ms(
        attempt, backoff_base_ms, rng=rng
    )
    step = m.StepRecord(
        hash=failed["hash"],
        name=failed["name"],
        op=steps.OP_RUN,
        status=m.STEP_RUNNING,
        attempt=attempt + 1,
        error=failed["error"],
        started_at=failed.get("started_at"),
    )
    timer = m.TimerRecord(
        new_id(now),
        m.TIMER_RETRY,
        run.run_id,
        f"{failed['hash']}:{attempt + 1}",
        now + delay,
        {"attempt": attempt + 1},
    )
    return m.ScheduleRetry(run.run_id, timer, step=step)


def _wait_change(run: m.RunRecord, op: dict[str, Any], now: int) -> m.AddWait:
    kind, key, opts = op["op"], op["hash"], op["opts"]
    step = m.StepRecord(hash=key, name=op["name"], op=kind, status=m.STEP_WAITING, started_at=now)
    change = m.AddWait(step=step, run_id=run.run_id)
    if kind == steps.OP_SLEEP:
        change.timer = m.TimerRecord(
            new_id(now), m.TIMER_SLEEP, run.run_id, key, int(opts["until_ms"])
        )
        return change
    timeout_ms = opts.get("timeout_ms")
    if timeout_ms is not None:
        change.timer = m.TimerRecord(
            new_id(now), m.TIMER_WAIT, run.run_id, key, now + int(timeout_ms), {"op": kind}
        )
    if kind == steps.OP_WAIT_FOR_EVENT:
        change.wait = m.WaitRecord(
            run.run_id,
            key,
            m.WAIT_EVENT,
            event_name=opts["event"],
            if_exp=opts.get("if_exp"),
            run_event=run.events[0],
        )
    elif kind == steps.OP_WAIT_FOR_SIGNAL:
        change.wait = m.WaitRecord(run.run_id, key, m.WAIT_SIGNAL, signal=opts["signal"])
    elif kind == steps.OP_INVOKE:
        change.wait = m.WaitRecord(run.run_id, key, m.WAIT_INVOKE)
        change.events = [
            system_events.targeted_event(
                fn.INVOKED_EVENT,
                opts.get("data") or {},
                internal_id=derived_id(run.run_id, key, "invoke"),
                function_id=opts["function_id"],
                parent={"run_id": run.run_id, "step_hash": key},
                now=now,
            )
        ]
    else:
        raise ValueError(f"unknown step op {kind!r}")
    return change


def plan_timer(timer: m.TimerRecord, registry: Registry, now: int) -> list[m.Change]:
    """The changes a due timer makes (for cron: the tick's event and the next tick)."""
    if timer.kind == m.TIMER_SLEEP:
        return [m.ResolveStep(timer.run_id, timer.step_hash, require_wait=False)]
    if timer.kind == m.TIMER_WAIT:
        error = None
        if timer.payload.get("op") == steps.OP_INVOKE:
            error = {
                "name": "InvokeTimeoutError",
                "message": "the invoked function did not finish in time",
                "stack": None,
            }
        return [m.ResolveStep(timer.run_id, timer.step_hash, error=error)]
    if timer.kind == m.TIMER_RETRY:
        return [m.Dispatch(timer.run_id, int(timer.payload.get("attempt", 0)))]
    if timer.kind == m.TIMER_CRON:
        return _cron_tick(timer, registry, now)
    raise ValueError(f"unknown timer kind {timer.kind!r}")


def _cron_tick(timer: m.TimerRecord, registry: Registry, now: int) -> list[m.Change]:
    from ._cron import cron_timer

    spec = registry.get(timer.run_id)
    cron = timer.step_hash
    if spec is None or cron not in spec.crons:
        return []
    event = system_events.targeted_event(
        fn.CRON_EVENT,
        {"cron": cron},
        internal_id=derived_id(timer.run_id, cron, str(timer.due_at)),
        function_id=spec.function_id,
        now=now,
        ts=timer.due_at,
    )
    next_timer = cron_timer(spec.function_id, cron, after_ms=max(now, timer.due_at))
    return [m.AddEvents([event]), m.AddTimer(next_timer)]
