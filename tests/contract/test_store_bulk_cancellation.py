"""Bulk cancellations in the `Store` contract: a batch reads its range after the cursor, and
is applied only by the scheduler holding its timer, with the cursor and the count in the same
transaction as the cancels."""

from __future__ import annotations

import itertools

from tideflow._core.protocol import ErrorInfo
from tideflow.store import Store
from tideflow.store import models as m

NOW = 1_700_000_000_000
_ids = itertools.count()


def event(at: int) -> m.EventRecord:
    return m.EventRecord(
        internal_id=f"evt-{at:015d}-{next(_ids):06d}", name="t/x", data={}, ts=at, received_at=at
    )


async def run_at(store: Store, at: int, function_id: str = "app-fn") -> str:
    evt = event(at)
    run_id = f"run-{at:015d}-{function_id}"
    change = m.CreateRun(run_id, function_id, "app", evt.internal_id, [evt.payload()])
    await store.process_events([(evt, [change])], at)
    return run_id


def cancellation(after: int, before: int) -> m.CancellationRecord:
    return m.CancellationRecord(
        cancellation_id=f"can-{next(_ids):06d}",
        function_id="app-fn",
        started_after=after,
        started_before=before,
        if_exp=None,
        created_at=NOW,
        cursor_at=after,
        cursor_id="",
    )


def cancel(run_id: str) -> m.FinishRun:
    return m.FinishRun(run_id, m.CANCELLED, error=ErrorInfo("Cancelled", "in a test (bulk)"))


async def claimed(store: Store, record: m.CancellationRecord, owner: str) -> m.TimerRecord:
    timer = m.TimerRecord(
        f"tmr-{next(_ids):06d}", m.TIMER_BULK_CANCEL, record.cancellation_id, "", NOW
    )
    await store.create_cancellation(record, timer)
    (claim,) = await store.claim_timers(owner, NOW + 100, NOW + 60_000, 10)
    return claim


async def test_a_batch_reads_the_functions_runs_in_range_after_the_cursor_in_order(
    store: Store,
) -> None:
    await run_at(store, NOW - 10)  # before the range
    first = await run_at(store, NOW)  # its start is included
    await run_at(store, NOW + 1, function_id="app-other")
    second = await run_at(store, NOW + 2)
    third = await run_at(store, NOW + 3)
    await run_at(store, NOW + 5)  # its end is excluded
    record = cancellation(NOW, NOW + 5)
    await store.create_cancellation(
        record, m.TimerRecord("t1", m.TIMER_BULK_CANCEL, record.cancellation_id, "", NOW)
    )

    stored, runs = await store.cancellation_batch(record.cancellation_id, 10)
    _, page = await store.cancellation_batch(record.cancellation_id, 2)
    missing = await store.cancellation_batch("no-such-cancellation", 10)

    assert stored == record
    assert [run.run_id for run in runs] == [first, second, third]
    assert [run.run_id for run in page] == [first, second]
    assert missing == (None, [])


async def test_a_batch_moves_the_cursor_and_counts_only_the_runs_it_ended(store: Store) -> None:
    live = await run_at(store, NOW + 1)
    ended = await run_at(store, NOW + 2)
    later = await run_at(store, NOW + 3)
    await store.cancel_run(ended, [], ErrorInfo("Cancelled", "before (api)"), NOW + 50)
    record = cancellation(NOW, NOW + 10)
    timer = await claimed(store, record, "scheduler-a")

    applied = await store.fire_cancellation(
        timer,
        "scheduler-a",
        [cancel(live), cancel(ended)],
        cursor=(NOW + 2, ended),
        completed=False,
        now=NOW + 100,
    )
    progress = await store.get_cancellation(record.cancellation_id)
    _, rest = await store.cancellation_batch(record.cancellation_id, 10)

    assert applied.done
    assert [ref.run_id for ref in applied.cancelled] == [live]
    assert progress is not None
    assert (progress.cancelled, progress.status) == (1, m.RUNNING)
    assert (progress.cursor_at, progress.cursor_id) == (NOW + 2, ended)
    assert [run.run_id for run in rest] == [later]


async def test_only_the_scheduler_holding_the_timer_applies_a_batch(store: Store) -> None:
    run_id = await run_at(store, NOW + 1)
    record = cancellation(NOW, NOW + 10)
    timer = await claimed(store, record, "scheduler-a")

    refused = await store.fire_cancellation(
        timer, "scheduler-b", [cancel(run_id)], cursor=(NOW + 1, run_id), completed=True, now=NOW
    )
    untouched = await store.get_run(run_id)
    done = await store.fire_cancellation(
        timer, "scheduler-a", [cancel(run_id)], cursor=(NOW + 1, run_id), completed=True, now=NOW
    )
    again = await store.fire_cancellation(
        timer, "scheduler-a", [cancel(run_id)], cursor=(NOW + 1, run_id), completed=True, now=NOW
    )
    progress = await store.get_cancellation(record.cancellation_id)

    assert not refused.done
    assert untouched is not None
    assert untouched.status == m.QUEUED
    assert done.done
    assert [ref.run_id for ref in done.cancelled] == [run_id]
    assert not again.done
    assert progress is not None
    assert (progress.cancelled, progress.status) == (1, m.COMPLETED)
