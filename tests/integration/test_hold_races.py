"""Debounce and batching with two scheduler replicas on PostgreSQL (two connection pools, as
two processes would have): an event for a key arrives on one while the other fires the key's
timer. Either may win; each round must end with one run per burst or batch, no event lost
from a batch and none in two runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable

import pytest
from tideflow import Settings
from tideflow._core.ids import new_id
from tideflow.broker import MemoryBroker
from tideflow.scheduler import Scheduler
from tideflow.store import Store, create_store
from tideflow.store import models as m

ROUNDS = 40
FUNCTIONS = [
    {
        "function_id": "race-debounced",
        "app_id": "race",
        "triggers": [{"event": "race/debounce"}],
        "debounce": {"period_ms": 1000, "key": "event.data.k", "timeout_ms": None},
    },
    {
        "function_id": "race-batched",
        "app_id": "race",
        "triggers": [{"event": "race/batch"}],
        "batch_events": {"max_size": 2, "timeout_ms": 1000, "key": "event.data.k"},
    },
]


class Clock:
    def __init__(self) -> None:
        self.ms = int(time.time() * 1000)

    def __call__(self) -> float:
        return self.ms / 1000


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[tuple[Scheduler, Scheduler, Store, Clock]]:
    stores = [create_store(postgres_url), create_store(postgres_url)]
    brokers = [MemoryBroker(), MemoryBroker()]
    clock = Clock()
    for store, broker in zip(stores, brokers, strict=True):
        await store.open()
        await store.migrate()
        await broker.connect()
    await stores[0].register_functions("race", FUNCTIONS, clock.ms)
    schedulers = [
        Scheduler(store=store, broker=broker, settings=Settings.from_env({}), clock=clock)
        for store, broker in zip(stores, brokers, strict=True)
    ]
    for scheduler, store in zip(schedulers, stores, strict=True):
        await scheduler._registry.refresh(store)
    try:
        yield schedulers[0], schedulers[1], stores[0], clock
    finally:
        for store, broker in zip(stores, brokers, strict=True):
            await broker.close()
            await store.close()


def event(name: str, key: str, now: int) -> m.EventRecord:
    return m.EventRecord(
        internal_id=new_id(now), name=name, data={"k": key}, ts=now, received_at=now
    )


async def later(action: Awaitable[None], n: int) -> None:
    await asyncio.sleep((n % 4) * 0.001)
    await action


async def race_round(
    replicas: tuple[Scheduler, Scheduler, Store, Clock], name: str, n: int
) -> tuple[list[str], list[list[str]]]:
    """The round's two event ids, and the event ids of each run they started."""
    first, second, store, clock = replicas
    clock.ms += 1_000_000
    one = event(name, f"k{n}", clock.ms)
    await first.process_events([one])
    clock.ms += 1500
    two = event(name, f"k{n}", clock.ms)
    # The first event's timer is due: one replica fires it as the other takes the second,
    # a little later in some rounds so that each order happens.
    await asyncio.gather(first.fire_due_timers(), later(second.process_events([two]), n))
    clock.ms += 100_000
    while await first.fire_due_timers() + await second.fire_due_timers():
        pass
    ids = [one.internal_id, two.internal_id]
    runs = [run for event_id in ids for run in await store.runs_for_event(event_id)]
    return ids, [[payload["id"] for payload in run.events] for run in runs]


@pytest.mark.timeout(120)
async def test_a_debounce_timer_firing_as_an_event_arrives_starts_each_burst_once(
    replicas: tuple[Scheduler, Scheduler, Store, Clock],
) -> None:
    for n in range(ROUNDS):
        (one, two), runs = await race_round(replicas, "race/debounce", n)
        # The second event is always some burst's last; the first is one only if its timer
        # fired before the second arrived.
        assert runs in ([[two]], [[one], [two]])
    assert await replicas[2].next_timer_due() is None


@pytest.mark.timeout(120)
async def test_a_batch_timer_firing_as_its_last_event_arrives_loses_no_event(
    replicas: tuple[Scheduler, Scheduler, Store, Clock],
) -> None:
    for n in range(ROUNDS):
        (one, two), runs = await race_round(replicas, "race/batch", n)
        # Full with the second event (one run of both), or closed by its timer first (one
        # run each); never an event in two runs or in none.
        assert runs in ([[one, two]], [[one], [two]])
    assert await replicas[2].next_timer_due() is None
