"""Cancellations asked through the API, carried out by the scheduler.

The API never ends a run itself: it leaves a request as a timer due at once (kind `cancel` for
one run, `bulk_cancel` for a bulk cancellation's next batch), which the timers loop claims like
any other timer. The claim (SKIP LOCKED, with a lease) gives each request to one scheduler
replica; a replica that dies holding it lets the lease lapse and another takes it over.

A bulk cancellation goes through its range batch by batch, one transaction each: the batch's
runs are cancelled, its cursor moves and its count grows together, and the next batch is a new
timer written in the same transaction, so no batch is done twice or skipped, whichever replica
takes it.
"""

from __future__ import annotations

import dataclasses
import logging

from tideflow._core import expressions
from tideflow._core.ids import new_id
from tideflow.store import Store
from tideflow.store import models as m

from . import _cancellation as cancellation

logger = logging.getLogger(__name__)

KINDS = (m.TIMER_CANCEL, m.TIMER_BULK_CANCEL)
BATCH = 500
"""Runs looked at per transaction: short enough not to hold the runs' locks for long."""


@dataclasses.dataclass(frozen=True)
class Batch:
    """What one batch of a bulk cancellation does: its changes, where its cursor ends, and
    whether the range is done."""

    changes: list[m.Change]
    cursor: tuple[int, str]
    completed: bool


def plan_batch(
    record: m.CancellationRecord, runs: list[m.RunRecord], now: int, *, limit: int
) -> Batch:
    """Cancels the runs of the batch that have not ended and whose event matches `if_exp`;
    a batch shorter than `limit` is the range's last."""
    matches = expressions.compile_expression(record.if_exp).matches if record.if_exp else None
    detail = f"by bulk cancellation {record.cancellation_id}"
    changes: list[m.Change] = []
    for run in runs:
        if run.status in m.TERMINAL:
            continue
        if matches is not None and not matches({"event": run.events[0] if run.events else {}}):
            continue
        changes += cancellation.cancel(run, cancellation.BULK, detail, now)
    completed = len(runs) < limit
    if not completed:
        following = m.TimerRecord(new_id(now), m.TIMER_BULK_CANCEL, record.cancellation_id, "", now)
        changes.append(m.AddTimer(following))
    cursor = (runs[-1].queued_at, runs[-1].run_id) if runs else (record.cursor_at, record.cursor_id)
    return Batch(changes, cursor, completed)


async def fire(store: Store, timer: m.TimerRecord, owner: str, now: int) -> m.Applied:
    """Carries out the request a claimed `cancel` or `bulk_cancel` timer holds."""
    if timer.kind == m.TIMER_CANCEL:
        run = await store.get_run(timer.run_id)
        changes: list[m.Change] = []
        # Whether it has ended is decided again under the run's lock: a run that ends
        # meanwhile is left as it ended.
        if run is not None and run.status not in m.TERMINAL:
            changes = cancellation.cancel(run, cancellation.API, "through the API", now)
        return await store.fire_timer(timer, owner, changes, now)
    record, runs = await store.cancellation_batch(timer.run_id, BATCH)
    if record is None or record.status == m.COMPLETED:
        return await store.fire_timer(timer, owner, [], now)
    batch = plan_batch(record, runs, now, limit=BATCH)
    applied = await store.fire_cancellation(
        timer, owner, batch.changes, cursor=batch.cursor, completed=batch.completed, now=now
    )
    if applied.done:
        logger.info(
            "bulk cancellation %s: %d more run(s) cancelled%s",
            record.cancellation_id,
            len(applied.cancelled),
            ", done" if batch.completed else "",
        )
    return applied
