"""Between store records and table rows: query parameters out, records in."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tideflow._core import protocol

from . import _models as m


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def error_text(error: protocol.ErrorInfo | None) -> str | None:
    return None if error is None else dumps(error.to_dict())


def error(text: str | None) -> protocol.ErrorInfo | None:
    return None if text is None else protocol.ErrorInfo.from_dict(json.loads(text))


def outcome(row: Mapping[str, Any]) -> protocol.Outcome:
    """A job's written outcome; one that cannot be read fails its run rather than the batch."""
    try:
        return protocol.decode(loads(row["outcome"]))
    except (KeyError, TypeError, ValueError) as exc:
        error = protocol.ErrorInfo("EngineError", f"unreadable job outcome: {exc!r}")
        return protocol.Failed(error)


def event_params(event: m.EventRecord) -> dict[str, Any]:
    return {
        "internal_id": event.internal_id,
        "id": event.id,
        "name": event.name,
        "data": dumps(event.data),
        "ts": event.ts,
        "user_data": dumps(event.user),
        "v": event.v,
        "target": dumps(event.target),
        "received_at": event.received_at,
    }


def step_params(run_id: str, step: m.StepRecord) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "hash": step.hash,
        "name": step.name,
        "op": step.op,
        "status": step.status,
        "attempt": step.attempt,
        "output": dumps(step.output),
        "error": error_text(step.error),
        "started_at": step.started_at,
        "ended_at": step.ended_at,
        "input": dumps(step.input),
    }


def wait_params(wait: m.WaitRecord) -> dict[str, Any]:
    return {
        "run_id": wait.run_id,
        "step_hash": wait.step_hash,
        "kind": wait.kind,
        "event_name": wait.event_name,
        "if_exp": wait.if_exp,
        "signal": wait.signal,
        "run_event": dumps(wait.run_event),
        "match_path": wait.match_path,
        "match_key": wait.match_key,
        "expires_at": wait.expires_at,
    }


def timer_params(timer: m.TimerRecord) -> dict[str, Any]:
    return {
        "timer_id": timer.timer_id,
        "kind": timer.kind,
        "run_id": timer.run_id,
        "step_hash": timer.step_hash,
        "due_at": timer.due_at,
        "payload": dumps(timer.payload),
    }


def event(row: Mapping[str, Any]) -> m.EventRecord:
    return m.EventRecord(
        internal_id=row["internal_id"],
        id=row["id"],
        name=row["name"],
        data=loads(row["data"]),
        ts=row["ts"],
        user=loads(row["user_data"]),
        v=row["v"],
        target=loads(row["target"]),
        received_at=row["received_at"],
    )


def run(row: Mapping[str, Any]) -> m.RunRecord:
    return m.RunRecord(
        run_id=row["run_id"],
        function_id=row["function_id"],
        app_id=row["app_id"],
        event_id=row["event_id"],
        status=row["status"],
        events=loads(row["events"]),
        queued_at=row["queued_at"],
        output=loads(row["output"]),
        error=error(row["error"]),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        attempt=row["attempt"],
        parent=loads(row["parent"]),
    )


def cancellation(row: Mapping[str, Any]) -> m.CancellationRecord:
    return m.CancellationRecord(
        cancellation_id=row["cancellation_id"],
        function_id=row["function_id"],
        started_after=row["started_after"],
        started_before=row["started_before"],
        if_exp=row["if_exp"],
        created_at=row["created_at"],
        status=row["status"],
        cancelled=int(row["cancelled"]),
        cursor_at=row["cursor_at"],
        cursor_id=row["cursor_id"],
    )


def step(row: Mapping[str, Any]) -> m.StepRecord:
    return m.StepRecord(
        hash=row["hash"],
        name=row["name"],
        op=row["op"],
        status=row["status"],
        attempt=row["attempt"],
        output=loads(row["output"]),
        error=error(row["error"]),
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        input=loads(row.get("input")),
    )


def job(row: Mapping[str, Any]) -> m.JobRecord:
    return m.JobRecord(
        row["job_id"], row["run_id"], row["function_id"], row["app_id"], row["attempt"]
    )


def pending_job(row: Mapping[str, Any]) -> m.PendingJob:
    slots = [m.Slot(row["slot_key_1"], int(row["slot_limit_1"]))]
    if row["slot_key_2"] is not None:
        slots.append(m.Slot(row["slot_key_2"], int(row["slot_limit_2"])))
    return m.PendingJob(row["job_id"], int(row["order_at"]), tuple(slots))


def slot_params(slots: Sequence[m.Slot]) -> dict[str, Any]:
    """The run's pools as the runs and jobs columns hold them (at most two)."""
    first, second = [*slots, None, None][:2]
    return {
        "slot_key_1": first.key if first else None,
        "slot_limit_1": first.limit if first else None,
        "slot_key_2": second.key if second else None,
        "slot_limit_2": second.limit if second else None,
    }


def joined_job(job_id: str, row: Mapping[str, Any]) -> m.JobRecord:
    """A job from a row joining it to its run (whose own `attempt` column it shadows)."""
    return m.JobRecord(job_id, row["run_id"], row["function_id"], row["app_id"], row["job_attempt"])


def wait(row: Mapping[str, Any]) -> m.WaitRecord:
    return m.WaitRecord(
        run_id=row["run_id"],
        step_hash=row["step_hash"],
        kind=row["kind"],
        event_name=row["event_name"],
        if_exp=row["if_exp"],
        signal=row["signal"],
        run_event=loads(row["run_event"]),
        match_path=row.get("match_path"),
        match_key=row.get("match_key"),
        expires_at=row.get("expires_at"),
    )


def timer(row: Mapping[str, Any]) -> m.TimerRecord:
    return m.TimerRecord(
        timer_id=row["timer_id"],
        kind=row["kind"],
        run_id=row["run_id"],
        step_hash=row["step_hash"],
        due_at=row["due_at"],
        payload=loads(row["payload"]) or {},
    )


def folded(steps: Sequence[m.StepRecord]) -> list[m.StepRecord]:
    """One record per step, as recording them one after another would leave it: the first
    final (Completed or Failed) record wins, and the first start time is kept."""
    by_hash: dict[str, m.StepRecord] = {}
    for step in steps:
        seen = by_hash.get(step.hash)
        if seen is None:
            by_hash[step.hash] = step
        elif seen.status not in (m.COMPLETED, m.FAILED):
            started = seen.started_at if seen.started_at is not None else step.started_at
            by_hash[step.hash] = dataclasses.replace(step, started_at=started)
    return list(by_hash.values())
