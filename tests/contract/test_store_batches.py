"""The hot path's batched verbs: many jobs claimed, many ended, many events applied, each in
one statement where the backend allows, with the same answers as one at a time."""

from __future__ import annotations

from test_store import CANCELLED, NOW, create_run, event, started_run
from tideflow._core import protocol
from tideflow.store import Store
from tideflow.store import models as m


async def test_claim_jobs_leases_each_once_and_skips_the_ended_and_the_unknown(
    store: Store,
) -> None:
    events = [event() for _ in range(5)]
    applied = await store.process_events([(e, [create_run(e)]) for e in events], NOW)
    jobs = applied.jobs
    assert len(jobs) == 5
    ended_run, ended_job = await started_run(store)
    await store.cancel_run(ended_run, [], CANCELLED, NOW + 1)
    wanted = [job.job_id for job in jobs] + [jobs[0].job_id, ended_job.job_id, "no-such-job"]
    states = await store.claim_jobs(wanted, "w1", NOW + 2, NOW + 100)
    assert sorted(states) == sorted(job.job_id for job in jobs)
    for job in jobs:
        assert states[job.job_id].job == job
        assert states[job.job_id].run.status == m.RUNNING
    # Leased now: another owner gets none of them until the leases lapse.
    assert await store.claim_jobs([job.job_id for job in jobs], "w2", NOW + 50, NOW + 150) == {}
    lapsed = await store.claim_jobs([jobs[1].job_id], "w2", NOW + 101, NOW + 200)
    assert list(lapsed) == [jobs[1].job_id]


async def test_claim_jobs_returns_each_runs_own_steps(store: Store) -> None:
    runs = [await started_run(store) for _ in range(3)]
    step_of = {}
    for n, (run_id, job) in enumerate(runs):
        step = m.StepRecord(f"h{n}", f"s{n}", "StepRun", m.COMPLETED, 0, n, None, NOW, NOW + 1)
        step_of[run_id] = step
        finish = m.JobFinish(job.job_id, [step], [], protocol.Continue(), NOW)
        assert await store.finish_jobs([finish], "worker") == {job.job_id}
    next_jobs = []
    for run_id, job in runs:
        (next_job,) = (await store.apply_outcome(job.job_id, [m.Dispatch(run_id)], NOW)).jobs
        next_jobs.append(next_job)
    states = await store.claim_jobs([j.job_id for j in next_jobs], "w2", NOW + 1, NOW + 100)
    for (run_id, _), next_job in zip(runs, next_jobs, strict=True):
        step = step_of[run_id]
        assert states[next_job.job_id].steps == {step.hash: step}


async def test_finish_jobs_writes_only_the_jobs_still_held(store: Store) -> None:
    held = [await started_run(store) for _ in range(3)]
    lost_run, lost_job = await started_run(store)
    await store.cancel_run(lost_run, [], CANCELLED, NOW + 1)
    sent = [event(name="app/sent") for _ in held]
    finishes = [
        m.JobFinish(
            job.job_id,
            [m.StepRecord("h", "only", "StepRun", m.COMPLETED, 0, n, None, NOW, NOW + 1)],
            [sent[n]],
            protocol.Completed(n),
            NOW + 2,
        )
        for n, (_, job) in enumerate(held)
    ]
    finishes.append(m.JobFinish(lost_job.job_id, [], [], protocol.Completed(9), NOW + 2))
    written = await store.finish_jobs(finishes, "worker")
    assert written == {job.job_id for _, job in held}
    for n, (run_id, job) in enumerate(held):
        assert [s.output for s in await store.run_steps(run_id)] == [n]
        (outcome,) = await store.job_outcomes([job.job_id])
        assert outcome.outcome == protocol.Completed(n)
    assert sorted(e.internal_id for e in await store.list_events("app/sent", 10)) == sorted(
        e.internal_id for e in sent
    )
    assert await store.finish_jobs(finishes, "worker") == set()


async def test_apply_outcomes_applies_a_repeated_outcome_once(store: Store) -> None:
    run_id, job = await started_run(store)
    finish = m.JobFinish(job.job_id, [], [], protocol.Completed(1), NOW)
    assert await store.finish_jobs([finish], "worker") == {job.job_id}
    done = m.FinishRun(run_id, m.COMPLETED, output=1)
    results = await store.apply_outcomes([(job.job_id, [done]), (job.job_id, [done])], NOW + 1)
    assert [r.done for r in results] == [True, False]
    run = await store.get_run(run_id)
    assert run is not None
    assert run.status == m.COMPLETED


async def test_events_repeated_in_one_batch_start_one_run(store: Store) -> None:
    evt = event()
    first, second = create_run(evt), create_run(evt, run_id="other-run")
    applied = await store.process_events([(evt, [first]), (evt, [second])], NOW)
    assert [job.run_id for job in applied.jobs] == [first.run_id]
    assert [r.run_id for r in await store.runs_for_event(evt.internal_id)] == [first.run_id]
