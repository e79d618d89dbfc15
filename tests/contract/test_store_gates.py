"""The store's side of the gates (rate limit, idempotency, singleton): state read and written
in the transaction that creates the run, exact when replicas decide for one key at once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest
from tideflow.scheduler.flow import idempotency, rate_limit, run_gates, singleton
from tideflow.store import Store, create_store, gates
from tideflow.store import models as m

NOW = 1_700_000_000_000
REPLICAS = 6
FUNCTION = "app-fn"
_counter = itertools.count()


@pytest.fixture
async def replicas(store_url: str, store: Store) -> AsyncIterator[list[Store]]:
    stores = [create_store(store_url) for _ in range(REPLICAS)]
    try:
        for replica in stores:
            await replica.open()
        yield stores
    finally:
        for replica in stores:
            await replica.close()


def gated(*gate: Any) -> tuple[m.EventRecord, m.CreateRun]:
    n = next(_counter)
    evt = m.EventRecord(
        internal_id=f"evt-{n:06d}", name="app/thing", data={"n": n}, ts=NOW, received_at=NOW
    )
    run = m.CreateRun(
        run_id=f"run-{n:06d}",
        function_id=FUNCTION,
        app_id="app",
        event_id=evt.internal_id,
        events=[evt.payload()],
        gates=tuple(gate),
    )
    return evt, run


def key(rule: str, value: str = "k") -> str:
    return run_gates.gate_key(rule, FUNCTION, value)


async def started(store: Store, runs: list[m.CreateRun]) -> list[str]:
    return [run.run_id for run in runs if await store.get_run(run.run_id) is not None]


async def test_one_batch_admits_exactly_the_limit_and_records_the_rest(store: Store) -> None:
    gate = rate_limit.Gate(key("rate_limit"), 2, 60_000)
    batch = [gated(gate) for _ in range(5)]

    applied = await store.process_events([(evt, [run]) for evt, run in batch], NOW)

    runs = [run for _, run in batch]
    assert await started(store, runs) == [run.run_id for run in runs[:2]]
    assert sorted(job.run_id for job in applied.jobs) == [run.run_id for run in runs[:2]]
    assert [await store.run_refusals(evt.internal_id) for evt, _ in batch] == [
        {},
        {},
        {FUNCTION: gates.RATE_LIMITED},
        {FUNCTION: gates.RATE_LIMITED},
        {FUNCTION: gates.RATE_LIMITED},
    ]


async def test_a_refused_run_takes_no_state_from_the_gates_before_it(store: Store) -> None:
    # The first run takes the idempotency key; the second, refused by it, must not use up
    # the rate limit that it passed.
    limit = rate_limit.Gate(key("rate_limit"), 2, 60_000)
    batch = [
        gated(limit, idempotency.Gate(key("idempotency", "same"))),
        gated(limit, idempotency.Gate(key("idempotency", "same"))),
        gated(limit, idempotency.Gate(key("idempotency", "other"))),
        gated(limit, idempotency.Gate(key("idempotency", "third"))),
    ]

    await store.process_events([(evt, [run]) for evt, run in batch], NOW)

    reasons = [await store.run_refusals(evt.internal_id) for evt, _ in batch]
    assert reasons == [{}, {FUNCTION: gates.IDEMPOTENT}, {}, {FUNCTION: gates.RATE_LIMITED}]


async def test_replicas_deciding_at_once_admit_exactly_the_limit(
    store: Store, replicas: list[Store]
) -> None:
    for round in range(3):
        gate = rate_limit.Gate(key("rate_limit", f"round-{round}"), 2, 60_000)
        batch = [gated(gate) for _ in replicas]
        await asyncio.gather(
            *(
                one.process_events([(evt, [run])], NOW)
                for one, (evt, run) in zip(replicas, batch, strict=True)
            )
        )
        assert len(await started(store, [run for _, run in batch])) == 2


async def test_replicas_deciding_at_once_take_an_idempotency_key_once(
    store: Store, replicas: list[Store]
) -> None:
    for round in range(3):
        gate = idempotency.Gate(key("idempotency", f"round-{round}"))
        batch = [gated(gate) for _ in replicas]
        await asyncio.gather(
            *(
                one.process_events([(evt, [run])], NOW)
                for one, (evt, run) in zip(replicas, batch, strict=True)
            )
        )
        assert len(await started(store, [run for _, run in batch])) == 1


async def test_replicas_racing_singleton_cancels_leave_one_run_holding_the_key(
    store: Store, replicas: list[Store]
) -> None:
    gate = singleton.Gate(key("singleton"), may_cancel=True)
    batch = [gated(gate) for _ in replicas]
    results = await asyncio.gather(
        *(
            one.process_events([(evt, [run])], NOW)
            for one, (evt, run) in zip(replicas, batch, strict=True)
        )
    )

    statuses = [(await store.get_run(run.run_id)) for _, run in batch]
    assert all(run is not None for run in statuses)
    assert sorted(run.status for run in statuses if run is not None) == [m.CANCELLED] * (
        REPLICAS - 1
    ) + [m.QUEUED]
    cancelled = sorted(run.run_id for result in results for run in result.cancelled)
    assert cancelled == sorted(
        run.run_id for run in statuses if run is not None and run.status == m.CANCELLED
    )


async def test_a_singleton_key_is_free_again_once_its_run_ended(store: Store) -> None:
    gate = singleton.Gate(key("singleton"), may_cancel=False)
    first, second, third = gated(gate), gated(gate), gated(gate)

    await store.process_events([(first[0], [first[1]]), (second[0], [second[1]])], NOW)
    finish = m.FinishRun(first[1].run_id, m.COMPLETED, output=1)
    evt, _ = gated()
    await store.process_events([(evt, [finish])], NOW + 1)
    await store.process_events([(third[0], [third[1]])], NOW + 2)

    assert await started(store, [first[1], second[1], third[1]]) == [
        first[1].run_id,
        third[1].run_id,
    ]
    assert await store.run_refusals(second[0].internal_id) == {FUNCTION: gates.SINGLETON}


async def test_forget_gate_state_drops_only_expired_rows(store: Store) -> None:
    short = rate_limit.Gate(key("rate_limit", "short"), 1, 1000)
    long = idempotency.Gate(key("idempotency", "long"))
    for evt, run in (gated(short), gated(long)):
        await store.process_events([(evt, [run])], NOW)

    assert await store.forget_gate_state(NOW + 5000, 100) == 1
    again = gated(long)
    await store.process_events([(again[0], [again[1]])], NOW + 5000)
    assert await store.run_refusals(again[0].internal_id) == {FUNCTION: gates.IDEMPOTENT}
