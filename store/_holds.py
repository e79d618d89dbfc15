"""Holds: events kept before their run exists (debounce, batching), and how their changes apply.

A transaction that changes holds locks their rows after runs and event keys (the lock order's
flow-control step, see `_sql`), once for all the keys it touches, and keeps what it read in a
`Locked`: each change then asks its rule (a pure function of the scheduler's) for the next
state, and writes it with the hold's timer, in that transaction. The store only applies the
rule's answer; the one guard of its own is a fired timer's: a hold starts only if it is due.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tideflow._core.ids import derived_id, new_id

from . import _codec as codec
from . import _models as m

if TYPE_CHECKING:
    from ._sql import Tx

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""(function id, key value)."""


@dataclasses.dataclass
class Locked:
    """The holds a transaction has locked, as they stand after the changes applied so far."""

    bursts: dict[Key, m.Burst | None] = dataclasses.field(default_factory=dict)
    batches: dict[Key, m.OpenBatch | None] = dataclasses.field(default_factory=dict)


def _kind(change: m.Change) -> str | None:
    if isinstance(change, m.HoldDebounced):
        return m.TIMER_DEBOUNCE
    if isinstance(change, m.AddToBatch):
        return m.TIMER_BATCH
    if isinstance(change, m.StartHeld):
        return change.kind
    return None


def has_holds(changes: Sequence[m.Change]) -> bool:
    return any(isinstance(change, m.HOLDS) for change in changes)


async def lock(tx: Tx, changes: Sequence[m.Change]) -> Locked:
    """Locks (PostgreSQL) and reads the holds these changes touch: bursts, then batches, each
    sorted by (function, key). Costs nothing when no change is a hold."""
    locked = Locked()
    wanted: dict[str, set[Key]] = {m.TIMER_DEBOUNCE: set(), m.TIMER_BATCH: set()}
    for change in changes:
        kind = _kind(change)
        if kind is not None:
            assert isinstance(change, m.HOLDS)
            wanted[kind].add((change.function_id, change.key))
    if wanted[m.TIMER_DEBOUNCE]:
        keys = sorted(wanted[m.TIMER_DEBOUNCE])
        locked.bursts = dict.fromkeys(keys)
        for row in await tx.fetch("lock_debounces", _key_lists(keys)):
            if row["event_id"]:  # else a placeholder: no burst
                locked.bursts[(row["function_id"], row["hold_key"])] = m.Burst(
                    row["event_id"], row["first_at"], row["due_at"]
                )
    if wanted[m.TIMER_BATCH]:
        keys = sorted(wanted[m.TIMER_BATCH])
        locked.batches = dict.fromkeys(keys)
        for row in await tx.fetch("lock_batches", _key_lists(keys)):
            if row["event_id"]:
                locked.batches[(row["function_id"], row["hold_key"])] = m.OpenBatch(
                    row["event_id"], row["size"], row["first_at"], row["due_at"]
                )
    return locked


def _key_lists(keys: Sequence[Key]) -> dict[str, Any]:
    return {"function_ids": [f for f, _ in keys], "keys": [k for _, k in keys]}


async def apply(
    tx: Tx, change: m.HoldDebounced | m.AddToBatch | m.StartHeld, now: int, locked: Locked
) -> list[m.CreateRun]:
    """Applies one hold change to the locked state; returns the run it starts, if any."""
    if isinstance(change, m.HoldDebounced):
        await _hold_debounced(tx, change, now, locked)
        return []
    if isinstance(change, m.AddToBatch):
        return await _add_to_batch(tx, change, now, locked)
    if change.kind == m.TIMER_DEBOUNCE:
        return await _start_burst(tx, change, now, locked)
    return await _start_batch(tx, change, now, locked)


async def _hold_debounced(tx: Tx, change: m.HoldDebounced, now: int, locked: Locked) -> None:
    key = (change.function_id, change.key)
    burst = locked.bursts.get(key)
    held = change.rule.on_event(burst, change.event_id, now)
    if held == burst:
        return
    locked.bursts[key] = held
    await tx.execute(
        "hold_debounce",
        {
            "function_id": change.function_id,
            "key": change.key,
            "event_id": held.event_id,
            "first_at": held.first_at,
            "due_at": held.due_at,
            "timer_id": new_id(now),
        },
    )


async def _start_burst(tx: Tx, change: m.StartHeld, now: int, locked: Locked) -> list[m.CreateRun]:
    key = (change.function_id, change.key)
    burst = locked.bursts.get(key)
    if burst is None:
        return []
    if burst.due_at > now:
        await _arm(tx, change, burst.due_at, now)
        return []
    await tx.execute("delete_debounce", {"function_id": change.function_id, "key": change.key})
    locked.bursts[key] = None
    rows = await tx.fetch("select_event", {"internal_id": burst.event_id})
    return _run(change, burst.event_id, [codec.event(row) for row in rows])


async def _add_to_batch(
    tx: Tx, change: m.AddToBatch, now: int, locked: Locked
) -> list[m.CreateRun]:
    key = (change.function_id, change.key)
    before = locked.batches.get(key)
    batch = change.rule.on_event(before, change.event_id, now)
    params = {"function_id": change.function_id, "key": change.key}
    await tx.execute(
        "add_batch_event",
        {
            **params,
            "added_id": change.event_id,
            "event_id": batch.event_id,
            "size": batch.size,
            "first_at": batch.first_at,
            "due_at": batch.due_at,
        },
    )
    if change.rule.is_full(batch):
        locked.batches[key] = None
        return await _close_batch(tx, change, batch)
    locked.batches[key] = batch
    if before is None:
        await _arm(tx, change, batch.due_at, now)
    return []


async def _start_batch(tx: Tx, change: m.StartHeld, now: int, locked: Locked) -> list[m.CreateRun]:
    key = (change.function_id, change.key)
    batch = locked.batches.get(key)
    if batch is None:
        return []
    if batch.due_at > now:
        await _arm(tx, change, batch.due_at, now)
        return []
    locked.batches[key] = None
    return await _close_batch(tx, change, batch)


async def _close_batch(
    tx: Tx, change: m.AddToBatch | m.StartHeld, batch: m.OpenBatch
) -> list[m.CreateRun]:
    params = {"function_id": change.function_id, "key": change.key}
    rows = await tx.fetch("select_batch_events", params)
    await tx.execute("delete_batch", params)
    return _run(change, batch.event_id, [codec.event(row) for row in rows])


def _run(
    change: m.AddToBatch | m.StartHeld, event_id: str, records: list[m.EventRecord]
) -> list[m.CreateRun]:
    """The hold's run, listed under `event_id` (a burst's last event, a batch's first) and keyed
    by it, so that a hold started twice still starts one run."""
    if not records:
        # Events are kept longer than any hold: only a database edited by hand gets here.
        logger.error("%s: the held events of key %r are gone", change.function_id, change.key)
        return []
    return [
        m.CreateRun(
            run_id=derived_id(event_id, change.function_id),
            function_id=change.function_id,
            app_id=change.app_id,
            event_id=event_id,
            events=[record.payload() for record in records],
        )
    ]


async def _arm(tx: Tx, change: m.Change, due_at: int, now: int) -> None:
    assert isinstance(change, m.HOLDS)
    await tx.execute(
        "arm_hold_timer",
        {
            "timer_id": new_id(now),
            "kind": _kind(change),
            "function_id": change.function_id,
            "key": change.key,
            "due_at": due_at,
        },
    )
