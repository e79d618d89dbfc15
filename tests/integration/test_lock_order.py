"""The two races that could deadlock before the lock order was fixed, each run many times on
PostgreSQL with two stores (two connection pools, as two processes would have): a signal that
arrives while its wait times out, and a cancellation while the run's wait timer fires."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from tideflow import Settings
from tideflow._core import protocol
from tideflow._core.protocol import ErrorInfo
from tideflow.broker import MemoryBroker
from tideflow.scheduler import Scheduler
from tideflow.store import Store, create_store
from tideflow.store import models as m

ROUNDS = 100
_ids = itertools.count()
CANCELLED = ErrorInfo("Cancelled", "cancelled in a race test")


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[tuple[Store, Store]]:
    first, second = create_store(postgres_url), create_store(postgres_url)
    await first.open()
    await first.migrate()
    await second.open()
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


@pytest.fixture
async def scheduler(stores: tuple[Store, Store]) -> AsyncIterator[Scheduler]:
    broker = MemoryBroker()
    await broker.connect()
    yield Scheduler(store=stores[0], broker=broker, settings=Settings.from_env({}))
    await broker.close()


def _now() -> int:
    return int(time.time() * 1000)


async def _prepare(store: Store, *, signal: str) -> str:
    """A run waiting on `signal`, whose wait's timeout is due now."""
    n = next(_ids)
    now = _now()
    event = m.EventRecord(internal_id=f"evt-{n}", name="race/go", data={}, ts=now, received_at=now)
    run_id = f"run-{n}"
    create = m.CreateRun(run_id, "race-fn", "race", event.internal_id, [event.payload()])
    (job,) = (await store.process_events([(event, [create])], now)).jobs
    assert await store.claim_job(job.job_id, "worker", now, now + 60_000) is not None
    request = protocol.StepRequest("h1", "wait", protocol.WaitForSignal(signal, timeout_ms=0))
    await store.finish_job(
        job.job_id, "worker", steps=[], events=[], outcome=protocol.Suspended((request,)), now=now
    )
    step = m.StepRecord("h1", "wait", "wait_for_signal", m.STEP_WAITING, started_at=now)
    wait = m.WaitRecord(run_id, "h1", m.WAIT_SIGNAL, signal=signal)
    timer = m.TimerRecord(f"tmr-{n}", m.TIMER_WAIT, run_id, "h1", now - 1, {"op": "wait"})
    applied = await store.apply_outcome(
        job.job_id, [m.AddWait(step=step, run_id=run_id, wait=wait, timer=timer)], now
    )
    assert applied.done
    return run_id


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_signal_arriving_as_its_wait_times_out_resolves_the_step_once(
    stores: tuple[Store, Store], scheduler: Scheduler
) -> None:
    first, second = stores
    outcomes = []
    for n in range(ROUNDS):
        signal = f"approve-{n}"
        run_id = await _prepare(first, signal=signal)
        # The timer fires on one connection while the signal lands on another.
        fired, (signalled, _) = await asyncio.gather(
            scheduler.fire_due_timers(), second.resolve_signal(signal, {"ok": n}, _now())
        )
        (step,) = await first.run_steps(run_id)
        outcomes.append("signal" if signalled is not None else "timeout")
        assert step.status == m.COMPLETED
        assert step.output == ({"ok": n} if signalled is not None else None)
        assert fired >= 1 or signalled is not None
    # Which one wins varies from round to round; each round resolved the step exactly once.
    assert len(outcomes) == ROUNDS


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_cancel_while_the_wait_timer_fires_leaves_nothing_behind(
    stores: tuple[Store, Store], scheduler: Scheduler
) -> None:
    first, second = stores
    for n in range(ROUNDS):
        run_id = await _prepare(first, signal=f"hold-{n}")
        await asyncio.gather(
            scheduler.fire_due_timers(), second.cancel_run(run_id, [], CANCELLED, _now())
        )
        run = await first.get_run(run_id)
        assert run is not None
        assert run.status == m.CANCELLED
        assert await first.next_timer_due() is None
        assert await first.stale_jobs(_now() + 10**9, _now() + 10**9, 10) == []
        # The signal is free again: nothing of the cancelled run's wait is left.
        assert (await first.resolve_signal(f"hold-{n}", None, _now()))[0] is None
