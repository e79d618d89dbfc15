"""`Store.forget_history` (retention): ended runs go in batches with everything keyed by them,
then the events no run refers to any more; live runs and their events stay."""

from __future__ import annotations

import itertools

from tideflow._core.protocol import ErrorInfo
from tideflow.store import Store
from tideflow.store import models as m

NOW = 1_700_000_000_000
CANCELLED = ErrorInfo("Cancelled", "cancelled in a test")
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter):06d}"


def event(*, at: int = NOW) -> m.EventRecord:
    return m.EventRecord(
        internal_id=unique("evt"), name="app/thing", data={"n": 1}, ts=at, received_at=at
    )


async def started_run(store: Store, *, now: int = NOW) -> str:
    """A run whose first job a worker holds."""
    evt = event(at=now)
    change = m.CreateRun(
        run_id=unique("run"),
        function_id="app-fn",
        app_id="app",
        event_id=evt.internal_id,
        events=[evt.payload()],
    )
    applied = await store.process_events([(evt, [change])], now)
    (job,) = applied.jobs
    assert await store.claim_job(job.job_id, "worker", now, now + 60_000) is not None
    return change.run_id


async def ended_run(store: Store, at: int) -> str:
    run_id = await started_run(store, now=at)
    run, _ = await store.cancel_run(run_id, [], CANCELLED, at)
    assert run is not None
    assert run.status == "Cancelled"
    return run_id


async def event_of(store: Store, run_id: str) -> str:
    run = await store.get_run(run_id)
    assert run is not None
    return run.event_id


async def test_ended_runs_go_in_batches_with_their_steps_and_then_their_events(
    store: Store,
) -> None:
    # Given three runs that ended before the cut-off, one that ended after, one still live
    old = [await ended_run(store, NOW + n) for n in range(3)]
    recent = await ended_run(store, NOW + 10_000)
    live = await started_run(store, now=NOW)
    nap = m.TimerRecord(
        timer_id=unique("tmr"),
        kind=m.TIMER_SLEEP,
        run_id=live,
        step_hash="nap",
        due_at=NOW + 50_000,
        payload={},
    )
    await store.add_timers([nap])
    old_events = [await event_of(store, run_id) for run_id in old]
    # When retention runs with a batch of two, three times
    first = await store.forget_history(NOW + 5_000, 2)
    second = await store.forget_history(NOW + 5_000, 2)
    third = await store.forget_history(NOW + 5_000, 2)
    # Then two runs went, then the third, then nothing; and their events with them
    assert (first.runs, second.runs, third.runs) == (2, 1, 0)
    assert first.events + second.events + third.events == 3
    for run_id, event_id in zip(old, old_events, strict=True):
        assert await store.get_run(run_id) is None
        assert await store.run_steps(run_id) == []
        assert await store.get_event(event_id) is None
    # And the recent and the live runs, their events and the live run's timer stay
    for run_id in (recent, live):
        run = await store.get_run(run_id)
        assert run is not None
        assert await store.get_event(run.event_id) is not None
    assert await store.step_deadlines(live) != {}


async def test_an_event_that_started_no_run_goes_once_processed_and_old(store: Store) -> None:
    lone, fresh, pending = event(at=NOW), event(at=NOW + 10_000), event(at=NOW)
    await store.process_events([(lone, []), (fresh, [])], NOW)
    await store.insert_events([pending])
    gone = await store.forget_history(NOW + 5_000, 100)
    assert gone.events == 1
    assert await store.get_event(lone.internal_id) is None
    # A recent event, and one not processed yet, stay
    assert await store.get_event(fresh.internal_id) is not None
    assert await store.get_event(pending.internal_id) is not None
