"""The `Store` contract: every backend honours each verb's documented guarantee."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from tideflow import errors
from tideflow._core import protocol
from tideflow._core.protocol import ErrorInfo
from tideflow.store import Store, create_store
from tideflow.store import models as m

NOW = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000
REPLICAS = 6
_counter = itertools.count()


@pytest.fixture
async def replicas(store_url: str, store: Store) -> AsyncIterator[list[Store]]:
    """More stores on the same database, as several scheduler and worker processes open."""
    stores = [create_store(store_url) for _ in range(REPLICAS)]
    try:
        for replica in stores:
            await replica.open()
        yield stores
    finally:
        for replica in stores:
            await replica.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter):06d}"


def event(*, name: str = "app/thing", id: str | None = None, at: int = NOW) -> m.EventRecord:
    return m.EventRecord(
        internal_id=unique("evt"), name=name, data={"n": 1}, ts=at, received_at=at, id=id
    )


def create_run(evt: m.EventRecord, *, run_id: str | None = None, **kwargs: Any) -> m.CreateRun:
    return m.CreateRun(
        run_id=run_id or unique("run"),
        function_id="app-fn",
        app_id="app",
        event_id=evt.internal_id,
        events=[evt.payload()],
        **kwargs,
    )


async def apply(store: Store, changes: Sequence[m.Change], now: int = NOW) -> m.Applied:
    """Applies changes the way the scheduler does for an event."""
    return await store.process_events([(event(at=now), changes)], now)


async def started_run(store: Store, now: int = NOW, **kwargs: Any) -> tuple[str, m.JobRecord]:
    """A run whose first job a worker holds, so that the run can be dispatched again."""
    evt = event(at=now)
    change = create_run(evt, **kwargs)
    applied = await store.process_events([(evt, [change])], now)
    (job,) = applied.jobs
    assert await store.claim_job(job.job_id, "worker", now, now + 60_000) is not None
    return change.run_id, job


def job_key(job: m.JobRecord) -> str:
    return job.job_id


def waiting_step(hash: str, op: str = "WaitForEvent") -> m.StepRecord:
    return m.StepRecord(hash=hash, name=hash, op=op, status=m.STEP_WAITING, started_at=NOW)


def timer(run_id: str, step_hash: str, *, kind: str = m.TIMER_WAIT, due: int) -> m.TimerRecord:
    return m.TimerRecord(unique("tmr"), kind, run_id, step_hash, due, {"why": kind})


# Lifecycle


CANCELLED = ErrorInfo("Cancelled", "cancelled in a test")


async def test_migrate_twice_keeps_the_data(store: Store) -> None:
    await store.register_functions("app", [{"function_id": "app-fn"}], NOW)
    await store.migrate()
    assert await store.list_functions() == [{"function_id": "app-fn"}]


async def test_ping_is_true_when_open_and_false_when_closed(store: Store) -> None:
    assert await store.ping() is True
    await store.close()
    await store.close()
    assert await store.ping() is False


async def test_a_closed_store_refuses_calls(store: Store) -> None:
    await store.close()
    with pytest.raises(errors.LifecycleError):
        await store.list_functions()


# Registry


async def test_register_functions_replaces_the_apps_configs(store: Store) -> None:
    await store.register_functions("a", [{"function_id": "a-1"}, {"function_id": "a-2"}], NOW)
    await store.register_functions("b", [{"function_id": "b-1", "x": [1]}], NOW)
    await store.register_functions("a", [{"function_id": "a-3"}], NOW + 1)
    await store.register_functions("a", [{"function_id": "a-3"}], NOW + 2)
    assert await store.list_functions() == [
        {"function_id": "a-3"},
        {"function_id": "b-1", "x": [1]},
    ]


# Events


async def test_insert_events_is_idempotent_per_internal_id(store: Store) -> None:
    first = event(id="key")
    again = m.EventRecord(**{**vars(first), "data": {"other": True}})
    await store.insert_events([first])
    await store.insert_events([again, first])
    assert await store.list_events(None, 10) == [first]
    assert await store.unprocessed_events(NOW + 1, 10) == [first]


async def test_list_events_is_newest_first_and_filters_by_name(store: Store) -> None:
    old, new, other = event(at=NOW), event(at=NOW + 5), event(name="app/other", at=NOW + 3)
    await store.insert_events([old, new, other])
    assert await store.list_events(None, 10) == [new, other, old]
    assert await store.list_events(None, 2) == [new, other]
    assert await store.list_events("app/thing", 10) == [new, old]


async def test_unprocessed_events_lists_accepted_events_until_processed(store: Store) -> None:
    early, late = event(at=NOW), event(at=NOW + 10)
    await store.insert_events([late, early])
    assert await store.unprocessed_events(NOW + 10, 10) == [early]
    assert await store.unprocessed_events(NOW + 11, 10) == [early, late]
    assert await store.unprocessed_events(NOW + 11, 1) == [early]
    await store.process_events([(early, [])], NOW + 20)
    assert await store.unprocessed_events(NOW + 11, 10) == [late]


async def test_process_events_applies_changes_once(store: Store) -> None:
    evt = event()
    change = create_run(evt)
    applied = await store.process_events([(evt, [change])], NOW)
    job = m.JobRecord(applied.jobs[0].job_id, change.run_id, "app-fn", "app", 0)
    assert applied == m.Applied(jobs=[job], events=[], done=True)
    redelivered = await store.process_events([(evt, [create_run(evt)])], NOW + 1)
    assert redelivered == m.Applied(jobs=[], events=[], done=True)
    run = m.RunRecord(
        run_id=change.run_id,
        function_id="app-fn",
        app_id="app",
        event_id=evt.internal_id,
        status=m.QUEUED,
        events=[evt.payload()],
        queued_at=NOW,
    )
    assert await store.runs_for_event(evt.internal_id) == [run]
    assert await store.get_run(change.run_id) == run
    assert await store.list_events(None, 10) == [evt]
    assert await store.unprocessed_events(NOW + 100, 10) == []


async def test_process_events_stores_added_events_and_reports_them(store: Store) -> None:
    sent = event(name="app/sent")
    applied = await apply(store, [m.AddEvents([sent])])
    assert applied == m.Applied(jobs=[], events=[sent], done=True)
    assert await store.list_events("app/sent", 10) == [sent]


async def test_an_event_id_seen_within_a_day_is_a_duplicate(store: Store) -> None:
    first, second = event(id="order-1"), event(id="order-1", at=NOW + 1)
    await store.process_events([(first, [create_run(first)])], NOW)
    applied = await store.process_events([(second, [create_run(second)])], NOW + 1)
    assert applied == m.Applied(jobs=[], events=[], done=True)
    assert await store.runs_for_event(second.internal_id) == []
    assert await store.unprocessed_events(NOW + 100, 10) == []
    later = event(id="order-1", at=NOW + DAY_MS + 1)
    applied = await store.process_events([(later, [create_run(later)])], NOW + DAY_MS + 1)
    assert len(applied.jobs) == 1
    assert [run.event_id for run in await store.runs_for_event(later.internal_id)] == [
        later.internal_id
    ]


async def test_create_run_makes_one_run_and_one_job_when_repeated(store: Store) -> None:
    evt = event()
    first, second = create_run(evt), create_run(evt)
    applied = await store.process_events([(evt, [first, second, first])], NOW)
    assert [job.run_id for job in applied.jobs] == [first.run_id]
    assert await apply(store, [second, first]) == m.Applied()
    assert [run.run_id for run in await store.runs_for_event(evt.internal_id)] == [first.run_id]
    assert await store.stale_jobs(NOW + 1, NOW + 1, 10) == applied.jobs


async def test_runs_for_event_are_oldest_first(store: Store) -> None:
    evt = event()
    late = m.CreateRun("run-b", "fn-late", "app", evt.internal_id, [])
    early = m.CreateRun("run-z", "fn-early", "app", evt.internal_id, [])
    await apply(store, [late], NOW + 5)
    await apply(store, [early], NOW)
    assert [run.run_id for run in await store.runs_for_event(evt.internal_id)] == [
        "run-z",
        "run-b",
    ]
    assert await store.get_run("missing") is None


# Jobs: the worker's side


async def test_claim_job_leases_exclusively_until_the_lease_lapses(store: Store) -> None:
    evt = event()
    change = create_run(evt)
    (job,) = (await store.process_events([(evt, [change])], NOW)).jobs
    state = await store.claim_job(job.job_id, "w1", NOW + 10, NOW + 100)
    run = m.RunRecord(
        run_id=change.run_id,
        function_id="app-fn",
        app_id="app",
        event_id=evt.internal_id,
        status=m.RUNNING,
        events=[evt.payload()],
        queued_at=NOW,
        started_at=NOW + 10,
    )
    assert state == m.RunState(run=run, steps={}, job=job)
    assert await store.claim_job(job.job_id, "w2", NOW + 100, NOW + 200) is None
    assert await store.renew_lease(job.job_id, "w2", NOW + 300) is False
    assert await store.renew_lease(job.job_id, "w1", NOW + 150) is True
    assert await store.claim_job(job.job_id, "w2", NOW + 150, NOW + 250) is None
    lapsed = await store.claim_job(job.job_id, "w2", NOW + 151, NOW + 250)
    assert lapsed == m.RunState(run=run, steps={}, job=job)
    assert await store.renew_lease(job.job_id, "w1", NOW + 400) is False
    assert await store.claim_job("no-such-job", "w1", NOW, NOW + 100) is None


async def test_claim_job_of_an_ended_run_yields_none(store: Store) -> None:
    run_id, job = await started_run(store)
    _, applied = await store.cancel_run(run_id, [], CANCELLED, NOW + 1)
    assert applied.done is True
    assert await store.claim_job(job.job_id, "w2", NOW + 120_000, NOW + 180_000) is None
    assert await store.stale_jobs(NOW + 200_000, NOW + 200_000, 10) == []


async def test_claim_job_returns_the_recorded_steps(store: Store) -> None:
    evt = event()
    (job,) = (await store.process_events([(evt, [create_run(evt)])], NOW)).jobs
    await store.claim_job(job.job_id, "w1", NOW, NOW + 100)
    step = m.StepRecord("h1", "one", "StepRun", m.COMPLETED, 0, {"x": 1}, None, NOW, NOW + 1)
    outcome = protocol.Continue()
    await store.finish_job(job.job_id, "w1", steps=[step], events=[], outcome=outcome, now=NOW)
    (next_job,) = (await store.apply_outcome(job.job_id, [m.Dispatch(job.run_id)], NOW)).jobs
    state = await store.claim_job(next_job.job_id, "w2", NOW + 1, NOW + 100)
    assert state is not None
    assert state.steps == {"h1": step}
    assert state.job == next_job


async def test_finish_job_only_by_the_lease_holder(store: Store) -> None:
    run_id, job = await started_run(store)
    step = m.StepRecord("h1", "one", "StepRun", m.COMPLETED, 0, {"x": 1}, None, NOW, NOW + 1)
    sent = event(name="app/sent")
    refused = await store.finish_job(
        job.job_id, "intruder", steps=[step], events=[sent], outcome=protocol.Completed(0), now=NOW
    )
    assert refused is False
    assert await store.run_steps(run_id) == []
    assert await store.job_outcomes([job.job_id]) == []
    held = await store.finish_job(
        job.job_id,
        "worker",
        steps=[step],
        events=[sent],
        outcome=protocol.Completed(1),
        now=NOW + 2,
    )
    assert held is True
    assert await store.run_steps(run_id) == [step]
    assert await store.list_events("app/sent", 10) == [sent]
    run = await store.get_run(run_id)
    assert run is not None
    assert await store.job_outcomes([job.job_id, "other"]) == [
        m.JobOutcome(job, run, protocol.Completed(1))
    ]
    again = await store.finish_job(
        job.job_id, "worker", steps=[], events=[], outcome=protocol.Continue(), now=NOW
    )
    assert again is False


async def test_a_completed_step_keeps_its_first_result(store: Store) -> None:
    run_id, job = await started_run(store)
    running = m.StepRecord("h1", "one", "StepRun", m.STEP_RUNNING, 0, None, None, NOW)
    first = m.StepRecord("h1", "one", "StepRun", m.COMPLETED, 0, "first", None, NOW + 5, NOW + 6)
    second = m.StepRecord("h1", "one", "StepRun", m.COMPLETED, 1, "second", None, NOW + 7, NOW + 8)
    await store.finish_job(
        job.job_id,
        "worker",
        steps=[running, first],
        events=[],
        outcome=protocol.Continue(),
        now=NOW,
    )
    (job2,) = (await store.apply_outcome(job.job_id, [m.Dispatch(run_id)], NOW)).jobs
    await store.claim_job(job2.job_id, "w2", NOW, NOW + 100)
    await store.finish_job(
        job2.job_id, "w2", steps=[second], events=[], outcome=protocol.Continue(), now=NOW
    )
    # The Running record's start time is kept; the rest is the first Completed result.
    kept = m.StepRecord("h1", "one", "StepRun", m.COMPLETED, 0, "first", None, NOW, NOW + 6)
    assert await store.run_steps(run_id) == [kept]


async def test_run_steps_are_in_recording_order(store: Store) -> None:
    run_id, job = await started_run(store)
    hashes = ["f", "a", "e", "b", "d", "c"]
    steps = [
        m.StepRecord(h, h, "StepRun", m.COMPLETED, 0, i, None, NOW, NOW)
        for i, h in enumerate(hashes)
    ]
    await store.finish_job(
        job.job_id, "worker", steps=steps[:3], events=[], outcome=protocol.Continue(), now=NOW
    )
    (job2,) = (await store.apply_outcome(job.job_id, [m.Dispatch(run_id)], NOW)).jobs
    await store.claim_job(job2.job_id, "w2", NOW, NOW + 100)
    await store.finish_job(
        job2.job_id, "w2", steps=steps[3:], events=[], outcome=protocol.Continue(), now=NOW
    )
    assert await store.run_steps(run_id) == steps
    assert await store.run_steps("missing") == []


# Jobs: the scheduler's side


async def test_apply_outcome_applies_once(store: Store) -> None:
    run_id, job = await started_run(store)
    assert await store.apply_outcome(job.job_id, [m.Dispatch(run_id)], NOW) == m.Applied(done=False)
    await store.finish_job(
        job.job_id, "worker", steps=[], events=[], outcome=protocol.Continue(), now=NOW
    )
    applied = await store.apply_outcome(job.job_id, [m.Dispatch(run_id, attempt=2)], NOW + 1)
    (next_job,) = applied.jobs
    assert next_job == m.JobRecord(next_job.job_id, run_id, "app-fn", "app", 2)
    assert applied.done is True
    again = await store.apply_outcome(job.job_id, [m.Dispatch(run_id, attempt=3)], NOW + 2)
    assert again == m.Applied(done=False)
    assert await store.job_outcomes([job.job_id]) == []


async def test_dispatch_adds_no_job_while_one_is_queued(store: Store) -> None:
    evt = event()
    change = create_run(evt)
    (job,) = (await store.process_events([(evt, [change])], NOW)).jobs
    assert await apply(store, [m.Dispatch(change.run_id)]) == m.Applied()
    await store.claim_job(job.job_id, "w1", NOW, NOW + 100)
    assert len((await apply(store, [m.Dispatch(change.run_id)])).jobs) == 1


async def test_stale_outcomes_lists_written_unapplied_outcomes(store: Store) -> None:
    _, job = await started_run(store)
    await store.finish_job(
        job.job_id, "worker", steps=[], events=[], outcome=protocol.Continue(), now=NOW + 10
    )
    assert await store.stale_outcomes(NOW + 10, 10) == []
    assert await store.stale_outcomes(NOW + 11, 10) == [job.job_id]
    await store.apply_outcome(job.job_id, [], NOW + 20)
    assert await store.stale_outcomes(NOW + 100, 10) == []


async def test_stale_jobs_republishes_old_queued_and_lapsed_jobs(store: Store) -> None:
    evt = event()
    (queued,) = (await store.process_events([(evt, [create_run(evt)])], NOW)).jobs
    _, leased = await started_run(store)  # leased until NOW + 60_000
    assert await store.stale_jobs(NOW + 1000, NOW, 10) == []
    assert await store.stale_jobs(NOW + 1000, NOW + 1, 10) == [queued]
    # Marked published at NOW + 1000: the same sweep again finds nothing.
    assert await store.stale_jobs(NOW + 1000, NOW + 1, 10) == []
    stale = await store.stale_jobs(NOW + 60_001, NOW + 1001, 10)
    assert sorted(stale, key=job_key) == sorted([leased, queued], key=job_key)


async def test_stale_jobs_skips_live_leases(store: Store) -> None:
    _, leased = await started_run(store)  # leased until NOW + 60_000
    assert await store.stale_jobs(NOW + 60_000, NOW + 1, 10) == []
    assert await store.stale_jobs(NOW + 60_001, NOW + 1, 10) == [leased]
    assert await store.stale_jobs(NOW + 60_002, NOW + 1, 10) == []


# Waits


async def test_add_wait_records_the_step_wait_and_timer_once(store: Store) -> None:
    run_id, _ = await started_run(store)
    step = waiting_step("h1")
    wait = m.WaitRecord(run_id, "h1", m.WAIT_EVENT, "app/approved", "x == 1", None, {"a": 1})
    first = timer(run_id, "h1", due=NOW + 500)
    applied = await apply(store, [m.AddWait(step, run_id, wait=wait, timer=first)])
    assert applied == m.Applied()
    repeat = m.AddWait(
        waiting_step("h1", op="Other"), run_id, wait=wait, timer=timer(run_id, "h1", due=NOW + 5)
    )
    assert await apply(store, [repeat]) == m.Applied()
    assert await store.run_steps(run_id) == [step]
    assert await store.waits_for_events(["app/approved", "app/other", "app/approved"]) == [wait]
    assert await store.next_timer_due() == NOW + 500
    assert await store.claim_timers("s1", NOW + 500, NOW + 600, 10) == [first]


async def test_add_wait_stores_its_events_only_when_new(store: Store) -> None:
    run_id, _ = await started_run(store)
    invocation = event(name="tideflow/function.invoked")
    wait = m.WaitRecord(run_id, "h1", m.WAIT_INVOKE)
    change = m.AddWait(waiting_step("h1", "InvokeFunction"), run_id, wait, events=[invocation])
    assert await apply(store, [change]) == m.Applied(events=[invocation])
    assert await apply(store, [change]) == m.Applied()
    assert await store.list_events("tideflow/function.invoked", 10) == [invocation]


async def test_resolve_step_with_require_wait_resolves_once(store: Store) -> None:
    run_id, _ = await started_run(store)
    wait = m.WaitRecord(run_id, "h1", m.WAIT_EVENT, "app/approved")
    await apply(store, [m.AddWait(waiting_step("h1"), run_id, wait, timer(run_id, "h1", due=NOW))])
    applied = await apply(store, [m.ResolveStep(run_id, "h1", output={"ok": True})], NOW + 7)
    (job,) = applied.jobs
    assert job == m.JobRecord(job.job_id, run_id, "app-fn", "app", 0)
    resolved = m.StepRecord(
        "h1", "h1", "WaitForEvent", m.COMPLETED, 0, {"ok": True}, None, NOW, NOW + 7
    )
    assert await store.run_steps(run_id) == [resolved]
    assert await store.waits_for_events(["app/approved"]) == []
    assert await store.next_timer_due() is None
    await store.claim_job(job.job_id, "w2", NOW + 8, NOW + 100)
    assert await apply(store, [m.ResolveStep(run_id, "h1", output="late")], NOW + 9) == m.Applied()
    assert await store.run_steps(run_id) == [resolved]


async def test_resolve_step_with_an_error_fails_the_step(store: Store) -> None:
    run_id, _ = await started_run(store)
    await apply(store, [m.AddWait(waiting_step("h1"), run_id, m.WaitRecord(run_id, "h1", "event"))])
    error = ErrorInfo("Boom", "no")
    await apply(store, [m.ResolveStep(run_id, "h1", error=error)], NOW + 3)
    failed = m.StepRecord("h1", "h1", "WaitForEvent", m.FAILED, 0, None, error, NOW, NOW + 3)
    assert await store.run_steps(run_id) == [failed]


async def test_a_second_run_waiting_on_a_taken_signal_fails_its_step(store: Store) -> None:
    first_run, _ = await started_run(store)
    second_run, _ = await started_run(store)
    signal = m.WaitRecord(first_run, "h1", m.WAIT_SIGNAL, signal="approve-7")
    taken = m.WaitRecord(second_run, "h2", m.WAIT_SIGNAL, signal="approve-7")
    await apply(store, [m.AddWait(waiting_step("h1", "WaitForSignal"), first_run, signal)])
    applied = await apply(
        store, [m.AddWait(waiting_step("h2", "WaitForSignal"), second_run, taken)], NOW + 4
    )
    assert [job.run_id for job in applied.jobs] == [second_run]
    error = ErrorInfo("SignalTakenError", "another run already waits on signal 'approve-7'")
    failed = m.StepRecord("h2", "h2", "WaitForSignal", m.FAILED, 0, None, error, NOW, NOW + 4)
    assert await store.run_steps(second_run) == [failed]
    assert (await store.run_steps(first_run))[0].status == m.STEP_WAITING


async def test_resolve_signal_resumes_the_waiting_run_once(store: Store) -> None:
    run_id, _ = await started_run(store)
    wait = m.WaitRecord(run_id, "h1", m.WAIT_SIGNAL, signal="go")
    await apply(store, [m.AddWait(waiting_step("h1", "WaitForSignal"), run_id, wait)])
    assert await store.resolve_signal("other", 1, NOW) == (None, m.Applied(done=False))
    resolved_run, applied = await store.resolve_signal("go", {"data": 2}, NOW + 6)
    assert resolved_run == run_id
    assert [job.run_id for job in applied.jobs] == [run_id]
    assert applied.done is True
    step = m.StepRecord(
        "h1", "h1", "WaitForSignal", m.COMPLETED, 0, {"data": 2}, None, NOW, NOW + 6
    )
    assert await store.run_steps(run_id) == [step]
    assert await store.resolve_signal("go", 3, NOW + 7) == (None, m.Applied(done=False))


# Timers


async def test_claim_timers_skips_timers_claimed_by_others(store: Store) -> None:
    run_id, _ = await started_run(store)
    early = timer(run_id, "h1", kind=m.TIMER_SLEEP, due=NOW - 2)
    later = timer(run_id, "h2", kind=m.TIMER_SLEEP, due=NOW - 1)
    future = timer(run_id, "h3", kind=m.TIMER_SLEEP, due=NOW + 100)
    await store.add_timers([future, later, early])
    await store.add_timers([timer(run_id, "h1", kind=m.TIMER_SLEEP, due=NOW + 9)])
    assert await store.next_timer_due() == NOW - 2
    assert await store.claim_timers("s1", NOW, NOW + 10, 1) == [early]
    assert await store.claim_timers("s2", NOW, NOW + 10, 10) == [later]
    assert await store.claim_timers("s3", NOW + 10, NOW + 20, 10) == []
    # Claims lapse: a scheduler that died does not keep its timers.
    assert await store.claim_timers("s3", NOW + 11, NOW + 20, 10) == [early, later]


async def test_fire_timer_only_by_its_claimer_and_once(store: Store) -> None:
    run_id, _ = await started_run(store)
    wait = m.WaitRecord(run_id, "h1", m.WAIT_EVENT, "app/approved")
    due = timer(run_id, "h1", due=NOW)
    await apply(store, [m.AddWait(waiting_step("h1"), run_id, wait, due)])
    (claimed,) = await store.claim_timers("s1", NOW, NOW + 10, 10)
    timeout = m.ResolveStep(run_id, "h1", output=None)
    assert await store.fire_timer(claimed, "s2", [timeout], NOW + 1) == m.Applied(done=False)
    fired = await store.fire_timer(claimed, "s1", [timeout], NOW + 1)
    assert [job.run_id for job in fired.jobs] == [run_id]
    assert fired.done is True
    assert await store.fire_timer(claimed, "s1", [timeout], NOW + 2) == m.Applied(done=False)
    assert await store.next_timer_due() is None
    assert [step.status for step in await store.run_steps(run_id)] == [m.COMPLETED]


async def test_two_owners_never_claim_the_same_timer(store: Store, replicas: list[Store]) -> None:
    run_id, _ = await started_run(store)
    timers = [timer(run_id, f"h{i}", kind=m.TIMER_SLEEP, due=NOW - i) for i in range(60)]
    await store.add_timers(timers)
    claims: list[list[m.TimerRecord]] = []
    for _ in range(3):
        claims += await asyncio.gather(
            *(one.claim_timers(f"s{i}", NOW, NOW + 10, 3) for i, one in enumerate(replicas))
        )
    # A claim may come up short while others hold rows locked; a last one takes the rest.
    claims.append(await store.claim_timers("s-last", NOW, NOW + 10, 60))
    claimed = [t.timer_id for batch in claims for t in batch]
    assert len(claimed) == len(set(claimed))
    assert sorted(claimed) == sorted(t.timer_id for t in timers)


async def test_schedule_retry_records_the_attempt_and_its_timer_once(store: Store) -> None:
    run_id, _ = await started_run(store)
    error = ErrorInfo("E", "m")
    step = m.StepRecord("h1", "one", "StepRun", m.STEP_RUNNING, 1, None, error, NOW)
    retry = timer(run_id, "h1", kind=m.TIMER_RETRY, due=NOW + 50)
    await apply(store, [m.ScheduleRetry(run_id, retry, step=step)])
    assert await apply(store, [m.ScheduleRetry(run_id, retry, step=step)]) == m.Applied()
    assert await store.run_steps(run_id) == [step]
    assert await store.claim_timers("s1", NOW + 50, NOW + 60, 10) == [retry]
    await apply(store, [m.ScheduleRetry(run_id, timer(run_id, "", due=NOW), run_attempt=2)])
    await apply(store, [m.ScheduleRetry(run_id, timer(run_id, "x", due=NOW), run_attempt=1)])
    run = await store.get_run(run_id)
    assert run is not None
    assert run.attempt == 2


# Ending runs


async def test_finish_run_of_an_invoked_child_resumes_the_parent(store: Store) -> None:
    parent_id, _ = await started_run(store)
    wait = m.WaitRecord(parent_id, "h1", m.WAIT_INVOKE)
    await apply(
        store,
        [
            m.AddWait(
                waiting_step("h1", "InvokeFunction"),
                parent_id,
                wait,
                timer(parent_id, "h1", due=NOW),
            )
        ],
    )
    child_id, _ = await started_run(store, parent={"run_id": parent_id, "step_hash": "h1"})
    applied = await apply(store, [m.FinishRun(child_id, m.COMPLETED, output=42)], NOW + 9)
    assert [job.run_id for job in applied.jobs] == [parent_id]
    child = await store.get_run(child_id)
    assert child is not None
    assert (child.status, child.output, child.ended_at) == (m.COMPLETED, 42, NOW + 9)
    step = m.StepRecord("h1", "h1", "InvokeFunction", m.COMPLETED, 0, 42, None, NOW, NOW + 9)
    assert await store.run_steps(parent_id) == [step]
    assert await store.next_timer_due() is None


async def test_a_cancelled_child_fails_the_parents_step(store: Store) -> None:
    parent_id, _ = await started_run(store)
    wait = m.WaitRecord(parent_id, "h1", m.WAIT_INVOKE)
    await apply(store, [m.AddWait(waiting_step("h1", "InvokeFunction"), parent_id, wait)])
    child_id, _ = await started_run(store, parent={"run_id": parent_id, "step_hash": "h1"})
    _, applied = await store.cancel_run(child_id, [], CANCELLED, NOW + 3)
    assert [job.run_id for job in applied.jobs] == [parent_id]
    error = ErrorInfo("InvokeCancelledError", f"invoked run {child_id} was cancelled")
    step = m.StepRecord("h1", "h1", "InvokeFunction", m.FAILED, 0, None, error, NOW, NOW + 3)
    assert await store.run_steps(parent_id) == [step]


async def test_finish_run_drops_the_runs_waits_timers_and_queued_job(store: Store) -> None:
    evt = event()
    change = create_run(evt)
    await store.process_events([(evt, [change])], NOW)
    run_id = change.run_id
    wait = m.WaitRecord(run_id, "h1", m.WAIT_EVENT, "app/approved")
    await apply(store, [m.AddWait(waiting_step("h1"), run_id, wait, timer(run_id, "h1", due=NOW))])
    error = ErrorInfo("E", "m")
    assert await apply(store, [m.FinishRun(run_id, m.FAILED, error=error)], NOW + 1) == m.Applied()
    assert await store.waits_for_events(["app/approved"]) == []
    assert await store.next_timer_due() is None
    assert await store.stale_jobs(NOW + 10, NOW + 10, 10) == []
    await apply(store, [m.FinishRun(run_id, m.COMPLETED, output=1)], NOW + 2)
    run = await store.get_run(run_id)
    assert run is not None
    assert (run.status, run.output, run.error, run.ended_at) == (m.FAILED, None, error, NOW + 1)


async def test_cancel_run_ends_a_run_once(store: Store) -> None:
    run_id, _ = await started_run(store)
    cancelled_event = event(name="tideflow/function.cancelled")
    run, applied = await store.cancel_run(run_id, [cancelled_event], CANCELLED, NOW + 5)
    assert run is not None
    assert (run.run_id, run.status, run.ended_at) == (run_id, m.CANCELLED, NOW + 5)
    assert applied.jobs == []
    assert applied.events == [cancelled_event]
    assert [cancelled.run_id for cancelled in applied.cancelled] == [run_id]
    assert await store.list_events("tideflow/function.cancelled", 10) == [cancelled_event]
    again, applied = await store.cancel_run(run_id, [], CANCELLED, NOW + 6)
    assert again == run
    assert applied.done is False
    missing, applied = await store.cancel_run("missing", [], CANCELLED, NOW)
    assert (missing, applied.done) == (None, False)


# Concurrency: several schedulers and workers at once


async def test_concurrent_deliveries_of_an_event_create_one_run(
    store: Store, replicas: list[Store]
) -> None:
    evt = event()
    results = await asyncio.gather(
        *(one.process_events([(evt, [create_run(evt)])], NOW) for one in replicas)
    )
    assert sum(len(applied.jobs) for applied in results) == 1
    assert len(await store.runs_for_event(evt.internal_id)) == 1


async def test_concurrent_schedulers_apply_an_accepted_event_once(
    store: Store, replicas: list[Store]
) -> None:
    for _ in range(3):
        evt = event()
        await store.insert_events([evt])
        # Each replica decides a different change, so a second application would show.
        sent = [event(name=f"app/sent-{evt.internal_id}") for _ in replicas]
        results = await asyncio.gather(
            *(
                one.process_events([(evt, [m.AddEvents([mine])])], NOW)
                for one, mine in zip(replicas, sent, strict=True)
            )
        )
        reported = [one for applied in results for one in applied.events]
        assert len(reported) == 1
        assert await store.list_events(reported[0].name, 10) == reported


async def test_concurrent_events_with_one_id_create_one_run(
    store: Store, replicas: list[Store]
) -> None:
    for round in range(3):
        events = [event(id=f"same-key-{round}") for _ in replicas]
        results = await asyncio.gather(
            *(
                one.process_events([(evt, [create_run(evt)])], NOW)
                for one, evt in zip(replicas, events, strict=True)
            )
        )
        assert sum(len(applied.jobs) for applied in results) == 1


async def test_concurrent_claims_of_a_job_have_one_winner(
    store: Store, replicas: list[Store]
) -> None:
    for _ in range(3):
        evt = event()
        (job,) = (await store.process_events([(evt, [create_run(evt)])], NOW)).jobs
        states = await asyncio.gather(
            *(one.claim_job(job.job_id, f"w{i}", NOW, NOW + 100) for i, one in enumerate(replicas))
        )
        assert len([state for state in states if state is not None]) == 1


async def test_concurrent_dispatches_of_a_run_queue_one_job(
    store: Store, replicas: list[Store]
) -> None:
    for _ in range(3):
        run_id, _ = await started_run(store)
        results = await asyncio.gather(*(apply(one, [m.Dispatch(run_id)]) for one in replicas))
        assert len([job for applied in results for job in applied.jobs]) == 1


async def test_concurrent_sweeps_share_the_stale_jobs(store: Store, replicas: list[Store]) -> None:
    queued = [await started_run(store) for _ in range(4)]  # leases lapse after NOW + 60_000
    for _ in range(20):
        evt = event()
        queued += [(job.run_id, job) for job in (await apply(store, [create_run(evt)])).jobs]
    later = NOW + 60_001
    sweeps = await asyncio.gather(*(one.stale_jobs(later, NOW + 1, 3) for one in replicas))
    sweeps.append(await store.stale_jobs(later, NOW + 1, 24))
    swept = [job.job_id for sweep in sweeps for job in sweep]
    assert len(swept) == len(set(swept))
    assert sorted(swept) == sorted(job.job_id for _, job in queued)


async def test_one_store_serves_concurrent_calls(store: Store) -> None:
    evt = event()
    (job,) = (await store.process_events([(evt, [create_run(evt)])], NOW)).jobs
    states = await asyncio.gather(
        *(store.claim_job(job.job_id, f"w{i}", NOW, NOW + 100) for i in range(12))
    )
    assert len([state for state in states if state is not None]) == 1
    assert await store.ping() is True
