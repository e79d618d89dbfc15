"""Holds in the `Store` contract: bursts and batches change with their events and timers in one
transaction, start their run once, and cost a few statements per micro-batch, not per event."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from tideflow._core.ids import derived_id
from tideflow.scheduler.flow import batching, debounce
from tideflow.store import Store
from tideflow.store import metrics as store_metrics
from tideflow.store import models as m

NOW = 1_700_000_000_000
FN = "app-held"
DEBOUNCE = debounce.Spec(period_ms=1000, key=None, timeout_ms=None)
_ids = itertools.count()


def event(at: int) -> m.EventRecord:
    # Ids sort by time, as the engine's own do.
    return m.EventRecord(
        internal_id=f"{at:015d}-{next(_ids):06d}", name="t/x", data={}, ts=at, received_at=at
    )


def start(event_id: str, events: list[dict[str, Any]]) -> m.CreateRun:
    return m.CreateRun(derived_id(event_id, FN), FN, "app", event_id, events)


def held(evt: m.EventRecord, key: str = "k") -> m.HoldDebounced:
    return m.HoldDebounced(FN, key, evt.internal_id, DEBOUNCE, start)


def batched(evt: m.EventRecord, max_size: int, key: str = "k") -> m.AddToBatch:
    rule = batching.Spec(max_size=max_size, timeout_ms=1000, key=None, if_exp=None)
    return m.AddToBatch(FN, key, evt.internal_id, rule, start)


def statements(store: Store) -> float:
    backend = "sqlite" if type(store).__name__.startswith("Sqlite") else "postgres"
    value: float = store_metrics.STATEMENTS.labels(backend)._value.get()
    return value


async def fire(store: Store, now: int, owner: str = "scheduler") -> list[m.Applied]:
    timers = await store.claim_timers(owner, now, now + 60_000, 10)
    return [
        await store.fire_timer(
            timer, owner, [m.StartHeld(timer.kind, timer.run_id, timer.step_hash, start)], now
        )
        for timer in timers
    ]


async def test_a_burst_moves_its_timer_and_starts_one_run_with_its_last_event(
    store: Store,
) -> None:
    first, last = event(NOW), event(NOW + 500)
    await store.process_events([(first, [held(first)])], NOW)
    await store.process_events([(last, [held(last)])], NOW + 500)
    assert await store.next_timer_due() == NOW + 1500

    assert await fire(store, NOW + 1499) == []
    (applied,) = await fire(store, NOW + 1500)

    assert len(applied.jobs) == 1
    assert await store.runs_for_event(first.internal_id) == []
    (run,) = await store.runs_for_event(last.internal_id)
    assert run.events == [last.payload()]
    assert await store.next_timer_due() is None


async def test_an_event_arriving_after_the_claim_supersedes_the_claimed_timer(
    store: Store,
) -> None:
    first, late = event(NOW), event(NOW + 1200)
    await store.process_events([(first, [held(first)])], NOW)
    (timer,) = await store.claim_timers("slow", NOW + 1000, NOW + 60_000, 10)

    await store.process_events([(late, [held(late)])], NOW + 1200)
    starting = m.StartHeld(m.TIMER_DEBOUNCE, FN, "k", start)
    applied = await store.fire_timer(timer, "slow", [starting], NOW + 1200)

    assert not applied.done
    assert await store.runs_for_event(first.internal_id) == []
    assert await store.next_timer_due() == NOW + 2200
    assert len(await fire(store, NOW + 2200)) == 1
    (run,) = await store.runs_for_event(late.internal_id)
    assert run.events == [late.payload()]


async def test_a_full_batch_starts_its_run_at_once_in_arrival_order(store: Store) -> None:
    events = [event(NOW + n) for n in range(7)]
    applied = await store.process_events([(e, [batched(e, 3)]) for e in events], NOW + 10)

    assert len(applied.jobs) == 2
    runs = [run for e in events for run in await store.runs_for_event(e.internal_id)]
    assert [run.event_id for run in runs] == [events[0].internal_id, events[3].internal_id]
    assert [run.events for run in runs] == [
        [e.payload() for e in events[0:3]],
        [e.payload() for e in events[3:6]],
    ]
    # The seventh waits for its batch's timer.
    assert await store.next_timer_due() == NOW + 10 + 1000
    assert len(await fire(store, NOW + 1010)) == 1
    (run,) = await store.runs_for_event(events[6].internal_id)
    assert run.events == [events[6].payload()]
    assert await fire(store, NOW + 10_000) == []


async def test_held_events_cost_a_few_statements_per_micro_batch_not_per_event(
    store: Store,
) -> None:
    async def cost(changes_for: Callable[[m.EventRecord, int], list[m.Change]]) -> float:
        events = [event(NOW + n) for n in range(20)]
        batch = [(e, changes_for(e, n)) for n, e in enumerate(events)]
        before = statements(store)
        await store.process_events(batch, NOW + 100)
        return statements(store) - before

    plain = await cost(lambda e, n: [])
    one_burst = await cost(lambda e, n: [held(e, "one")])
    many_bursts = await cost(lambda e, n: [held(e, f"key-{n}")])
    one_batch = await cost(lambda e, n: [batched(e, 100, "open")])

    # Lock, write the holds, write their timers (and the batch's events): per micro-batch.
    assert one_burst - plain <= 3
    assert many_bursts - plain <= 3
    assert one_batch - plain <= 4
