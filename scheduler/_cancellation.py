"""Cancelling a run, whatever the cause: one set of changes, applied in one transaction.

The run ends `Cancelled` with `{"name": "Cancelled", "message": ...}` naming its cause, drops
its waits, timers, jobs (and so its slots), and emits `tideflow/function.cancelled` once; the
store tells its workers (`Applied.cancelled`). `on_failure` does not run: it triggers on
`tideflow/function.failed`, which a cancellation does not emit.
"""

from __future__ import annotations

from tideflow._core.protocol import ErrorInfo
from tideflow.store import models as m

from . import _system_events as system_events

EVENT, API, BULK, TIMEOUT, SINGLETON = "event", "api", "bulk", "timeout", "singleton"
CAUSES = (EVENT, API, BULK, TIMEOUT, SINGLETON)


def cancelled_error(cause: str, detail: str) -> ErrorInfo:
    """The error of a run cancelled for `cause` (one of CAUSES), e.g. "by event shop/x"."""
    if cause not in CAUSES:
        raise ValueError(f"unknown cancellation cause {cause!r}")
    return ErrorInfo("Cancelled", f"cancelled {detail} ({cause})")


def cancel(run: m.RunRecord, cause: str, detail: str, now: int) -> list[m.Change]:
    """The changes that cancel `run`; nothing happens if it has ended when they apply."""
    error = cancelled_error(cause, detail)
    parent = run.parent["run_id"] if run.parent else None
    events = system_events.finish_events(run, m.CANCELLED, now, output=None, error=error)
    return [
        m.FinishRun(run.run_id, m.CANCELLED, error=error, parent_run_id=parent),
        m.AddEvents(events),
    ]
