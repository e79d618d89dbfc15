"""Decisions: what each event, job outcome and timer changes. Pure functions of their inputs
and `now`; the scheduler applies the changes in one transaction."""

from __future__ import annotations

import dataclasses
import functools
import random
from typing import Any

from tideflow._core import matching, protocol
from tideflow._core import system_events as names
from tideflow._core.expressions import compile_expression
from tideflow._core.ids import derived_id, new_id
from tideflow._core.protocol import ErrorInfo
from tideflow.store import gates as gating
from tideflow.store import models as m

from . import _backoff as backoff
from . import _cancellation as cancellation
from . import _holding as holding
from . import _offload as offload
from . import _system_events as system_events
from ._registry import FunctionSpec, Registry
from .flow import cancel as cancel_rule
from .flow import concurrency, priority, run_gates


def plan_event(
    event: m.EventRecord, registry: Registry, waits: list[m.WaitRecord], *, env: str = ""
) -> list[m.Change]:
    payload = event.payload()
    changes: list[m.Change] = []
    if event.target is not None:
        changes.extend(_targeted_run(event, registry, payload, env))
    else:
        for spec in registry.matching(event.name, payload):
            if _is_about_itself(event, spec.function_id):
                continue
            run = new_run(spec, event, [payload], env, gated=True)
            changes.append(holding.hold(run, spec, payload, _starter(spec, env)))
    for wait in waits:
        if wait.event_name != event.name:
            continue
        if wait.kind == m.WAIT_CANCEL:
            changes.extend(cancel_rule.on_event(wait, event, payload))
            continue
        if wait.if_exp is None or compile_expression(wait.if_exp).matches(
            {"event": wait.run_event or {}, "async": payload}
        ):
            changes.append(m.ResolveStep(wait.run_id, wait.step_hash, output=payload))
    return changes


def new_run(
    spec: FunctionSpec,
    event: m.EventRecord,
    events: list[dict[str, Any]],
    env: str,
    parent: dict[str, Any] | None = None,
    *,
    gated: bool,
) -> m.CreateRun:
    """A run of `spec` started by `event` (the first of `events`), with its place in line and,
    if `gated`, the gates it must pass to start."""
    return run_of(spec, event.internal_id, events, env, parent, gated=gated)


def run_of(
    spec: FunctionSpec,
    event_id: str,
    events: list[dict[str, Any]],
    env: str,
    parent: dict[str, Any] | None = None,
    *,
    gated: bool,
    held: bool = False,
) -> m.CreateRun:
    """A run of `spec` listed under the event `event_id`, keyed by it (one run per event and
    function), with its place in line and its gates (if `gated`) from the first of `events`:
    all of them, or for a run a hold starts (`held`) those of a run's start, its events having
    passed the others before they were held."""
    gates: tuple[gating.Gate, ...] = ()
    if gated:
        gates = (run_gates.at_start if held else run_gates.for_run)(spec, events[0])
    run_id = derived_id(event_id, spec.function_id)
    return m.CreateRun(
        run_id=run_id,
        function_id=spec.function_id,
        app_id=spec.app_id,
        event_id=event_id,
        events=events,
        parent=parent,
        slots=concurrency.slots(spec.concurrency, spec.function_id, env, events[0]),
        priority_ms=priority.offset_ms(spec.priority, events[0]),
        gates=gates,
        start_timeout_ms=spec.start_timeout_ms,
        finish_timeout_ms=spec.finish_timeout_ms,
        listeners=cancel_rule.listeners(spec.cancel, run_id, events[0]),
    )


def _starter(spec: FunctionSpec, env: str) -> m.RunStarter:
    # How a hold (debounce, batching) starts its run later, from the events it kept.
    return functools.partial(run_of, spec, env=env, gated=True, held=True)


def _targeted_run(
    event: m.EventRecord, registry: Registry, payload: dict[str, Any], env: str
) -> list[m.Change]:
    target = event.target or {}
    spec = registry.get(target["function_id"])
    parent = target.get("parent")
    if spec is None:
        if parent is None:
            return []
        error = ErrorInfo(
            "FunctionNotFoundError", f"no function {target['function_id']!r} is registered"
        )
        return [m.ResolveStep(parent["run_id"], parent["step_hash"], error=error)]
    # Of the runs asked for by name, only cron ticks pass the gates: an invocation (a step's,
    # the API's) or a rerun is asked for explicitly, and someone awaits its run.
    gated = event.name == names.CRON_EVENT
    return [new_run(spec, event, [payload], env, parent, gated=gated)]


def _is_about_itself(event: m.EventRecord, function_id: str) -> bool:
    # A function triggered by run events would otherwise trigger itself forever.
    return (
        event.name.startswith(names.RUN_EVENT_PREFIX)
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
    run = outcome.run
    match outcome.outcome:
        case protocol.Completed(output=output):
            return _finish(run, registry, m.COMPLETED, now, output=output)
        case protocol.Failed(error=error):
            return _finish(run, registry, m.FAILED, now, error=error)
        case protocol.Continue():
            return [m.Dispatch(run.run_id)]
        case protocol.Suspended(requests=requests):
            return [_wait_change(run, request, now, outcome.job.attempt) for request in requests]
        case protocol.Errored(error=error, retry_after_ms=retry_after_ms):
            spec = registry.get(run.function_id)
            if run.attempt >= (spec.retries if spec is not None else 0):
                return _finish(run, registry, m.FAILED, now, error=error)
            delay = retry_after_ms or backoff.retry_delay_ms(run.attempt, backoff_base_ms, rng=rng)
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
        case protocol.Retrying(retries=retries):
            return [_step_retry(run, retry, now, backoff_base_ms, rng) for retry in retries]


def _finish(
    run: m.RunRecord,
    registry: Registry,
    status: str,
    now: int,
    *,
    output: Any = None,
    error: ErrorInfo | None = None,
) -> list[m.Change]:
    events = system_events.finish_events(run, status, now, output=output, error=error)
    quiet = not any(registry.matching(event.name, event.payload()) for event in events)
    parent = run.parent["run_id"] if run.parent else None
    return [
        m.FinishRun(run.run_id, status, output=output, error=error, parent_run_id=parent),
        m.AddEvents(events, quiet=quiet),
    ]


def _step_retry(
    run: m.RunRecord,
    failed: protocol.StepRetry,
    now: int,
    backoff_base_ms: int,
    rng: random.Random | None,
) -> m.Change:
    delay = failed.retry_after_ms or backoff.retry_delay_ms(
        failed.attempt, backoff_base_ms, rng=rng
    )
    step = m.StepRecord(
        hash=failed.hash,
        name=failed.name,
        op=protocol.OP_RUN,
        status=m.STEP_RUNNING,
        attempt=failed.attempt + 1,
        error=failed.error,
        started_at=failed.started_at,
    )
    timer = m.TimerRecord(
        new_id(now),
        m.TIMER_RETRY,
        run.run_id,
        f"{failed.hash}:{failed.attempt + 1}",
        now + delay,
        {"attempt": failed.attempt + 1},
    )
    return m.ScheduleRetry(run.run_id, timer, step=step)


def _wait_change(
    run: m.RunRecord, request: protocol.StepRequest, now: int, attempt: int
) -> m.AddWait:
    key, ask = request.hash, request.ask
    step = m.StepRecord(
        hash=key, name=request.name, op=ask.op, status=m.STEP_WAITING, started_at=now
    )
    change = m.AddWait(step=step, run_id=run.run_id)
    if isinstance(ask, (protocol.Fetch, protocol.AiInfer)):
        return offload.wait(run, request, ask, change, now, attempt)
    if isinstance(ask, protocol.Sleep):
        change.timer = m.TimerRecord(new_id(now), m.TIMER_SLEEP, run.run_id, key, ask.until_ms)
        return change
    if ask.timeout_ms is not None:
        change.timer = m.TimerRecord(
            new_id(now), m.TIMER_WAIT, run.run_id, key, now + ask.timeout_ms, {"op": ask.op}
        )
    match ask:
        case protocol.WaitForEvent(event=event, if_exp=if_exp):
            change.wait = m.WaitRecord(
                run.run_id,
                key,
                m.WAIT_EVENT,
                event_name=event,
                if_exp=if_exp,
                run_event=run.events[0],
            )
            index = matching.wait_index(if_exp, run.events[0])
            if index is not None:
                change.wait.match_path, change.wait.match_key = index
        case protocol.WaitForSignal(signal=signal):
            change.wait = m.WaitRecord(run.run_id, key, m.WAIT_SIGNAL, signal=signal)
        case protocol.Invoke(function_id=function_id, data=data):
            change.wait = m.WaitRecord(run.run_id, key, m.WAIT_INVOKE)
            change.events = [
                m.EventRecord.targeted(
                    names.INVOKED_EVENT,
                    data or {},
                    internal_id=derived_id(run.run_id, key, "invoke"),
                    function_id=function_id,
                    parent={"run_id": run.run_id, "step_hash": key},
                    now=now,
                )
            ]
    return change


def plan_offloaded(
    result: protocol.OffloadResult,
    registry: Registry,
    *,
    now: int,
    backoff_base_ms: int,
    rng: random.Random | None = None,
) -> list[m.Change]:
    """What an offloaded request's result changes: its step completes (a response, a 4xx
    included), fails for good, or has its attempt counted and retried after a backoff."""
    spec = registry.get(result.function_id)
    retries = spec.retries if spec is not None else 0
    return offload.on_result(result, retries, now, backoff_base_ms, rng)


def plan_timer(
    timer: m.TimerRecord, registry: Registry, now: int, *, env: str = ""
) -> list[m.Change]:
    """The changes a due timer makes (for cron: the tick's event and the next tick)."""
    if timer.kind == m.TIMER_SLEEP:
        return [m.ResolveStep(timer.run_id, timer.step_hash, require_wait=False)]
    if timer.kind == m.TIMER_WAIT and timer.payload.get("op") in protocol.OFFLOADED_OPS:
        spec = registry.get(str(timer.payload.get("function_id")))
        return offload.lost(timer, spec.retries if spec is not None else 0, now)
    if timer.kind == m.TIMER_WAIT:
        error = None
        if timer.payload.get("op") == protocol.OP_INVOKE:
            error = ErrorInfo("InvokeTimeoutError", "the invoked function did not finish in time")
        return [m.ResolveStep(timer.run_id, timer.step_hash, error=error)]
    if timer.kind == m.TIMER_START:
        return [m.Dispatch(timer.run_id)]
    if timer.kind == m.TIMER_RETRY:
        return [m.Dispatch(timer.run_id, int(timer.payload.get("attempt", 0)))]
    if timer.kind == m.TIMER_CRON:
        return _cron_tick(timer, registry, now)
    if timer.kind in (m.TIMER_DEBOUNCE, m.TIMER_BATCH):
        spec = registry.get(timer.run_id)
        # A function gone since: its held events stay stored and start nothing.
        return [] if spec is None else [holding.start(timer, _starter(spec, env))]
    raise ValueError(f"unknown timer kind {timer.kind!r}")


def _cron_tick(timer: m.TimerRecord, registry: Registry, now: int) -> list[m.Change]:
    from ._cron import cron_timer

    spec = registry.get(timer.run_id)
    cron = timer.step_hash
    if spec is None or cron not in spec.crons:
        return []
    event = m.EventRecord.targeted(
        names.CRON_EVENT,
        {"cron": cron},
        internal_id=derived_id(timer.run_id, cron, str(timer.due_at)),
        function_id=spec.function_id,
        now=now,
        ts=timer.due_at,
    )
    next_timer = cron_timer(spec.function_id, cron, after_ms=max(now, timer.due_at))
    return [m.AddEvents([event]), m.AddTimer(next_timer)]


def plan_timeout(timer: m.TimerRecord, run: m.RunRecord | None, now: int) -> list[m.Change]:
    """What a run's start or finish deadline does: cancel it if it has not started (start) or
    not ended (finish) in time; a finish deadline found early moves to the real one."""
    if run is None or run.status in m.TERMINAL:
        return []
    limit_ms = int(timer.payload["ms"])
    if timer.step_hash == "start":
        if run.started_at is not None:
            return []
        detail = f"by its start timeout: no step started within {limit_ms} ms"
        return cancellation.cancel(run, cancellation.TIMEOUT, detail, now)
    deadline = None if run.started_at is None else run.started_at + limit_ms
    if deadline is None or deadline > now:
        due = now + limit_ms if deadline is None else deadline
        later = dataclasses.replace(timer, timer_id=new_id(now), due_at=due)
        return [m.AddTimer(later)]
    detail = f"by its finish timeout: not finished within {limit_ms} ms of its first step"
    return cancellation.cancel(run, cancellation.TIMEOUT, detail, now)
