"""Events the engine emits about runs."""

from __future__ import annotations

from typing import Any

from tideflow import _function as fn
from tideflow._core.ids import derived_id
from tideflow.store import models as m


def run_event(name: str, run: m.RunRecord, now: int, **extra: Any) -> m.EventRecord:
    data = {"function_id": run.function_id, "run_id": run.run_id, "event": run.events[0], **extra}
    return m.EventRecord(
        internal_id=derived_id(run.run_id, name),
        name=name,
        data=data,
        ts=now,
        received_at=now,
    )


def finish_events(
    run: m.RunRecord, status: str, now: int, *, output: Any, error: Any
) -> list[m.EventRecord]:
    if status == m.COMPLETED:
        return [run_event(fn.FINISHED_EVENT, run, now, result=output)]
    if status == m.FAILED:
        return [
            run_event(fn.FAILED_EVENT, run, now, error=error),
            run_event(fn.FINISHED_EVENT, run, now, error=error),
        ]
    return [run_event(fn.CANCELLED_EVENT, run, now, error=error)]


def targeted_event(
    name: str,
    data: Any,
    *,
    internal_id: str,
    function_id: str,
    now: int,
    parent: dict[str, Any] | None = None,
    ts: int | None = None,
) -> m.EventRecord:
    return m.EventRecord(
        internal_id=internal_id,
        name=name,
        data=data,
        ts=now if ts is None else ts,
        received_at=now,
        target={"function_id": function_id, "parent": parent},
    )
