"""Holds: events kept before their run exists (debounce, batching), and how their changes apply.

A transaction that changes holds locks their rows after runs and event keys (the lock order's
flow-control step, see `_sql`), once for all the keys it touches, and keeps what it read in a
`Locked`. Each change then asks its rule (a pure function of the scheduler's) for the next state
and records it there; `flush` writes every changed hold and timer at the end of the transaction,
one statement each, however many events it held. The store only applies the rules' answers;
its one guard is a fired timer's: a hold starts only if it is due.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tideflow._core.ids import new_id

from . import _codec as codec
from . import _models as m

if TYPE_CHECKING:
    from ._sql import Tx

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""(function id, key value)."""


@dataclasses.dataclass
class Locked:
    """The holds a transaction has locked, as they stand after the changes applied so far, and
    what of them is still to be written."""

    bursts: dict[Key, m.Burst | None] = dataclasses.field(default_factory=dict)
    batches: dict[Key, m.OpenBatch | None] = dataclasses.field(default_factory=dict)
    changed_bursts: set[Key] = dataclasses.field(default_factory=set)
    changed_batches: set[Key] = dataclasses.field(default_factory=set)
    added: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Events added to batches, not written yet."""
    timers: dict[tuple[str, Key], int] = dataclasses.field(default_factory=dict)
    """Timers to (re)arm: (kind, key) -> due time."""


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
    sorted by (function, key), one statement each."""
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
        _hold_debounced(change, now, locked)
        return []
    if isinstance(change, m.AddToBatch):
        return await _add_to_batch(tx, change, now, locked)
    if change.kind == m.TIMER_DEBOUNCE:
        return await _start_burst(tx, change, now, locked)
    return await _start_batch(tx, change, now, locked)


async def flush(tx: Tx, locked: Locked, now: int) -> None:
    """Writes what the transaction's changes left to write: one statement per table."""
    await _write_added(tx, locked)
    bursts = [
        {"function_id": f, "hold_key": k, **dataclasses.asdict(burst)}
        for (f, k) in sorted(locked.changed_bursts)
        if (burst := locked.bursts[(f, k)]) is not None
    ]
    if bursts:
        await tx.execute("upsert_debounces", {"bursts": codec.dumps(bursts)})
    batches = [
        {"function_id": f, "hold_key": k, **dataclasses.asdict(batch)}
        for (f, k) in sorted(locked.changed_batches)
        if (batch := locked.batches[(f, k)]) is not None
    ]
    if batches:
        await tx.execute("upsert_batches", {"batches": codec.dumps(batches)})
    timers = [
        {"timer_id": new_id(now), "kind": kind, "function_id": f, "hold_key": k, "due_at": due}
        for (kind, (f, k)), due in sorted(locked.timers.items())
    ]
    if timers:
        # A moved timer gets a new id and loses its claim: a replica about to fire the old one
        # then finds it gone (delete_claimed_timer) and starts nothing.
        await tx.execute("arm_hold_timers", {"timers": codec.dumps(timers)})
    locked.changed_bursts.clear()
    locked.changed_batches.clear()
    locked.timers.clear()


async def _write_added(tx: Tx, locked: Locked) -> None:
    if locked.added:
        await tx.execute("add_batch_events", {"events": codec.dumps(locked.added)})
        locked.added.clear()


def _hold_debounced(change: m.HoldDebounced, now: int, locked: Locked) -> None:
    key = (change.function_id, change.key)
    burst = locked.bursts.get(key)
    held = change.rule.on_event(burst, change.event_id, now)
    if held == burst:
        return
    locked.bursts[key] = held
    locked.changed_bursts.add(key)
    locked.timers[(m.TIMER_DEBOUNCE, key)] = held.due_at


async def _start_burst(tx: Tx, change: m.StartHeld, now: int, locked: Locked) -> list[m.CreateRun]:
    key = (change.function_id, change.key)
    burst = locked.bursts.get(key)
    if burst is None:
        return []
    if burst.due_at > now:
        locked.timers[(m.TIMER_DEBOUNCE, key)] = burst.due_at
        return []
    await tx.execute("delete_debounce", {"function_id": change.function_id, "key": change.key})
    locked.bursts[key] = None
    locked.changed_bursts.discard(key)
    locked.timers.pop((m.TIMER_DEBOUNCE, key), None)
    rows = await tx.fetch("select_event", {"internal_id": burst.event_id})
    return _run(change, burst.event_id, [codec.event(row) for row in rows])


async def _add_to_batch(
    tx: Tx, change: m.AddToBatch, now: int, locked: Locked
) -> list[m.CreateRun]:
    key = (change.function_id, change.key)
    before = locked.batches.get(key)
    batch = change.rule.on_event(before, change.event_id, now)
    locked.added.append(
        {
            "function_id": change.function_id,
            "hold_key": change.key,
            "position": batch.size,
            "event_id": change.event_id,
        }
    )
    if change.rule.is_full(batch):
        return await _close_batch(tx, change, batch, locked)
    locked.batches[key] = batch
    locked.changed_batches.add(key)
    if before is None or before.due_at <= now:
        # An overdue batch may have lost its timer (it fired while the function was not
        # registered): its next event arms it again.
        locked.timers[(m.TIMER_BATCH, key)] = batch.due_at
    return []


async def _start_batch(tx: Tx, change: m.StartHeld, now: int, locked: Locked) -> list[m.CreateRun]:
    key = (change.function_id, change.key)
    batch = locked.batches.get(key)
    if batch is None:
        return []
    if batch.due_at > now:
        locked.timers[(m.TIMER_BATCH, key)] = batch.due_at
        return []
    return await _close_batch(tx, change, batch, locked)


async def _close_batch(
    tx: Tx, change: m.AddToBatch | m.StartHeld, batch: m.OpenBatch, locked: Locked
) -> list[m.CreateRun]:
    key = (change.function_id, change.key)
    params = {"function_id": change.function_id, "key": change.key}
    # Its events added in this transaction are read back with the others, in their order.
    await _write_added(tx, locked)
    rows = await tx.fetch("select_batch_events", params)
    await tx.execute("delete_batch", params)
    locked.batches[key] = None
    locked.changed_batches.discard(key)
    locked.timers.pop((m.TIMER_BATCH, key), None)
    return _run(change, batch.event_id, [codec.event(row) for row in rows])


def _run(
    change: m.AddToBatch | m.StartHeld, event_id: str, records: list[m.EventRecord]
) -> list[m.CreateRun]:
    """The hold's run, listed under `event_id` (a burst's last event, a batch's first) and keyed
    by it, so that a hold started twice still starts one run (and with its concurrency slots
    and priority taken from its first event, as any run's)."""
    if not records:
        # Events are kept longer than any hold: only a database edited by hand gets here.
        logger.error("%s: the held events of key %r are gone", change.function_id, change.key)
        return []
    return [change.start(event_id, [record.payload() for record in records])]
