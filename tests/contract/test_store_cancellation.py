"""A store verb may be cancelled at any await (a shutdown, a timeout, a cancelled handler):
the store must go on serving every verb, with no transaction left open by the cancelled one."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import random
from collections.abc import Callable, Coroutine
from typing import Any

import psycopg
from tideflow._core import protocol
from tideflow.store import Store
from tideflow.store import models as m

NOW = 1_700_000_000_000
DAY_MS = 24 * 3600 * 1000
ITERATIONS = 300
SEED = 20261201
DEADLINE_S = 10.0
_counter = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_counter):06d}"


def event(name: str = "app/thing") -> m.EventRecord:
    return m.EventRecord(
        internal_id=unique("evt"), name=name, data={"n": 1}, ts=NOW, received_at=NOW
    )


def create_run(evt: m.EventRecord) -> m.CreateRun:
    return m.CreateRun(
        run_id=unique("run"),
        function_id="app-fn",
        app_id="app",
        event_id=evt.internal_id,
        events=[evt.payload()],
    )


def step(hash: str) -> m.StepRecord:
    return m.StepRecord(hash, hash, "StepRun", m.COMPLETED, 0, {"x": 1}, None, NOW, NOW + 1)


def timer(run_id: str, *, due: int) -> m.TimerRecord:
    return m.TimerRecord(unique("tmr"), m.TIMER_SLEEP, run_id, unique("h"), due, {"n": 1})


@dataclasses.dataclass(frozen=True)
class Subject:
    """A run whose first job the worker holds: what one verb under test works on."""

    run_id: str
    job: m.JobRecord


async def started_run(store: Store) -> Subject:
    evt = event()
    change = create_run(evt)
    (job,) = (await store.process_events([(evt, [change])], NOW)).jobs
    assert await store.claim_job(job.job_id, "worker", NOW, NOW + 60_000) is not None
    return Subject(change.run_id, job)


Verb = Callable[[Store, Subject], Coroutine[Any, Any, Any]]


async def start_a_run(store: Store, _: Subject) -> m.Applied:
    evt = event()
    return await store.process_events([(evt, [create_run(evt)])], NOW)


# Reads and writes, single statements and multi-statement transactions. Loop timers are due a
# day from now and claimed two days from now, so they never meet the final check's timers.
CANCELLED = protocol.ErrorInfo("Cancelled", "cancelled in a test")
VERBS: dict[str, Verb] = {
    "insert_events": lambda s, _: s.insert_events([event(), event()]),
    "process_events": start_a_run,
    "claim_job": lambda s, x: s.claim_job(x.job.job_id, "other", NOW + 120_000, NOW + 180_000),
    "renew_lease": lambda s, x: s.renew_lease(x.job.job_id, "worker", NOW + 90_000),
    "finish_job": lambda s, x: s.finish_job(
        x.job.job_id,
        "worker",
        steps=[step("h1")],
        events=[event()],
        outcome=protocol.Completed(1),
        now=NOW,
    ),
    "apply_outcome": lambda s, x: s.apply_outcome(x.job.job_id, [m.Dispatch(x.run_id)], NOW),
    "add_timers": lambda s, x: s.add_timers([timer(x.run_id, due=NOW + DAY_MS)]),
    "claim_timers": lambda s, _: s.claim_timers("loop", NOW + 2 * DAY_MS, NOW + 3 * DAY_MS, 5),
    "stale_jobs": lambda s, _: s.stale_jobs(NOW, NOW - DAY_MS, 5),
    "cancel_run": lambda s, x: s.cancel_run(x.run_id, [event()], CANCELLED, NOW + 1),
    "get_run": lambda s, x: s.get_run(x.run_id),
    "run_steps": lambda s, x: s.run_steps(x.run_id),
    "list_events": lambda s, _: s.list_events(None, 5),
    "next_timer_due": lambda s, _: s.next_timer_due(),
    "job_outcomes": lambda s, x: s.job_outcomes([x.job.job_id]),
    "register_functions": lambda s, _: s.register_functions("app", [{"function_id": "f"}], NOW),
    "list_functions": lambda s, _: s.list_functions(),
    "migrate": lambda s, _: s.migrate(),
}


async def after_a_random_delay(rng: random.Random) -> None:
    """None at all (the task has not started), a few event-loop turns, or a short sleep."""
    kind = rng.randrange(3)
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            await asyncio.sleep(0)
    elif kind == 2:
        await asyncio.sleep(rng.uniform(0, 0.004))


async def test_cancelled_verbs_leave_the_store_serving_every_verb(
    store: Store, store_url: str
) -> None:
    rng = random.Random(SEED)
    names = sorted(VERBS)
    cancelled = 0
    for iteration in range(ITERATIONS):
        # Some callers are cancelled; the others, running beside them, must be served.
        subjects = [await started_run(store) for _ in range(rng.randint(1, 3))]
        chosen = [rng.choice(names) for _ in subjects]
        tasks = [
            asyncio.create_task(VERBS[name](store, subject))
            for name, subject in zip(chosen, subjects, strict=True)
        ]
        await after_a_random_delay(rng)
        doomed = rng.sample(range(len(tasks)), rng.randint(1, len(tasks)))
        for index in doomed:
            tasks[index].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for name, result in zip(chosen, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                cancelled += 1
            elif isinstance(result, BaseException):
                raise AssertionError(f"iteration {iteration}: {name} failed") from result
    # Most calls were cut short somewhere, not all before they began or after they ended.
    assert cancelled > ITERATIONS // 2

    await assert_every_verb_serves(store)
    if store_url.startswith("postgresql"):
        await assert_no_connection_left_in_a_transaction(store_url)


async def assert_every_verb_serves(store: Store) -> None:
    evt = event("app/final")
    change = create_run(evt)
    applied = await store.process_events([(evt, [change])], NOW)
    (job,) = applied.jobs
    state = await store.claim_job(job.job_id, "final", NOW, NOW + 60_000)
    assert state is not None
    assert (state.run.run_id, state.job) == (change.run_id, job)
    assert await store.renew_lease(job.job_id, "final", NOW + 70_000) is True
    sent = event("app/final-sent")
    assert await store.finish_job(
        job.job_id, "final", steps=[step("f1")], events=[sent], outcome=protocol.Continue(), now=NOW
    )
    assert await store.run_steps(change.run_id) == [step("f1")]
    assert await store.list_events("app/final-sent", 10) == [sent]
    (outcome,) = await store.job_outcomes([job.job_id])
    assert outcome.outcome == protocol.Continue()
    (next_job,) = (await store.apply_outcome(job.job_id, [m.Dispatch(change.run_id)], NOW)).jobs
    due = timer(change.run_id, due=NOW - 1)
    await store.add_timers([due])
    assert await store.claim_timers("final", NOW, NOW + 10, 100) == [due]
    assert (await store.fire_timer(due, "final", [], NOW + 1)).done is True
    run, cancelling = await store.cancel_run(change.run_id, [], CANCELLED, NOW + 2)
    assert cancelling.done is True
    assert run is not None
    assert run.status == m.CANCELLED
    fetched = await store.get_run(change.run_id)
    assert fetched is not None
    assert fetched.status == m.CANCELLED
    assert await store.claim_job(next_job.job_id, "final", NOW + 3, NOW + 60_000) is None
    await store.register_functions("final", [{"function_id": "final-fn"}], NOW)
    assert {"function_id": "final-fn"} in await store.list_functions()
    await store.migrate()
    await store.insert_events([event("app/inserted")])
    assert len(await store.list_events("app/inserted", 10)) == 1
    assert await store.ping() is True


async def assert_no_connection_left_in_a_transaction(url: str) -> None:
    """No pooled connection is in a transaction or still running a statement."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as observer:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        while True:
            cursor = await observer.execute(
                "SELECT state, query FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend' AND state <> 'idle'"
            )
            busy = await cursor.fetchall()
            if not busy or loop.time() > deadline:
                break
            await asyncio.sleep(0.05)
    assert busy == []
