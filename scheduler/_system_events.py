"""Which events the engine emits when a run ends."""

from __future__ import annotations

from typing import Any

from tideflow._core import system_events as names
from tideflow._core.protocol import ErrorInfo
from tideflow.store import models as m


def finish_events(
    run: m.RunRecord, status: str, now: int, *, output: Any, error: ErrorInfo | None
) -> list[m.EventRecord]:
    error_data = None if error is None else error.to_dict()
    if status == m.COMPLETED:
        return [m.EventRecord.about_run(names.FINISHED_EVENT, run, now, result=output)]
    if status == m.FAILED:
        return [
            m.EventRecord.about_run(names.FAILED_EVENT, run, now, error=error_data),
            m.EventRecord.about_run(names.FINISHED_EVENT, run, now, error=error_data),
        ]
    return [m.EventRecord.about_run(names.CANCELLED_EVENT, run, now, error=error_data)]
