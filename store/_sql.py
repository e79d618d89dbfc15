"""The store's verbs, written once over named queries; each SQL backend supplies its
connection handling and its own SQL file.

Lock order. Every transaction takes its row locks in one order, so two of them can wait for
each other but never deadlock:

1. runs: the rows of every run the transaction changes, all at once, sorted by run id
   (`lock_runs`; a worker's job claim locks its run the same way before its job);
2. event keys (deduplication), sorted by key (`lock_event_keys`);
3. holds (debounce bursts, then open batches), each sorted by (function, key)
   (`_holds.lock`): a hold is read before the gates of the run it may start;
4. gate state rows, sorted by key (`lock_gate_state`, see `_gates`);
5. concurrency pools (`lock_slot_keys`), sorted by key, taken only by admission, which runs in
   a transaction of its own and takes no run lock;
6. then anything else: events, steps, waits, timers, jobs. Admission updates the pending jobs
   it chose last; a job deleted meanwhile (its run cancelled) is simply not admitted.

Rows that belong to no run are claimed with SKIP LOCKED (due timers, stale jobs) or locked on
their own in a transaction of their own (a job's checkpoint and finish, which touch its job,
steps and events only). A change for a run that has already ended is dropped, with a debug
line: a late outcome, wait or timer of a cancelled run leaves nothing behind.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from tideflow._core import matching, protocol
from tideflow._core.ids import new_id

from . import _codec as codec
from . import _gates as gating
from . import _holds as holds
from . import _models as m
from . import _views as views
from ._base import Store

logger = logging.getLogger(__name__)

DEDUP_WINDOW_MS = 24 * 3600 * 1000
PROCESS_MEMORY_MS = 24 * 3600 * 1000
_RUN_SCOPED = (m.ResolveStep, m.AddWait, m.ScheduleRetry, m.Dispatch, m.FinishRun)


def touched_runs(changes: Sequence[m.Change]) -> set[str]:
    """The runs whose rows these changes lock (the parent of a run they finish, too)."""
    runs: set[str] = set()
    for change in changes:
        if isinstance(change, _RUN_SCOPED):
            runs.add(change.run_id)
        if isinstance(change, m.FinishRun) and change.parent_run_id is not None:
            runs.add(change.parent_run_id)
    return runs


def _is_for_ended_run(change: m.Change, runs: dict[str, str], applied: m.Applied) -> bool:
    """Whether `change` is for a run that has ended: then it is dropped (and a FinishRun's
    `applied` says it did nothing)."""
    if not isinstance(change, _RUN_SCOPED):
        return False
    if runs.get(change.run_id, m.CANCELLED) not in m.TERMINAL:
        return False
    logger.debug("dropping %s for run %s, which has ended", type(change).__name__, change.run_id)
    if isinstance(change, m.FinishRun):
        applied.done = False
    return True


@dataclasses.dataclass
class _Later:
    """Writes of a transaction that no change after them reads, collected so that each kind
    goes in one statement (`fetch_each`) once the transaction's changes have all been
    applied (`SqlStore._flush`): runs that end with no parent to resume, plain new runs with
    their first jobs, and events no function triggers on. Each write keeps the `Applied` it
    reports into."""

    finishes: list[tuple[m.FinishRun, m.Applied]] = dataclasses.field(default_factory=list)
    runs: list[tuple[dict[str, Any], m.Applied]] = dataclasses.field(default_factory=list)
    quiet: list[tuple[m.EventRecord, m.Applied]] = dataclasses.field(default_factory=list)


class Tx(Protocol):
    async def fetch(self, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]: ...

    async def execute(self, query: str, params: Mapping[str, Any]) -> int: ...

    async def fetch_each(
        self, query: str, items: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """Runs `query` for every item (with `params` beside each) and returns all rows. A
        backend with a network round trip per statement (PostgreSQL) runs it once, the items
        passed as one JSON array `items`; SQLite runs its per-item text once per item, in one
        call to its thread. No statement when `items` is empty."""


class SqlStore(Store, abc.ABC):
    locks_rows = True
    """False for a backend whose writers are serialised whole (SQLite): no row lock to take."""

    @abc.abstractmethod
    def _transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """One transaction: committed when the block ends, rolled back if it raises."""

    def _autocommit(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        """Statements each atomic on its own (reads, single-statement writes): a backend may
        spare the BEGIN / COMMIT round trips."""
        return self._transaction()

    # Registry

    async def register_functions(
        self, app_id: str, configs: Sequence[dict[str, Any]], now: int
    ) -> None:
        async with self._transaction() as tx:
            await tx.execute("delete_app_functions", {"app_id": app_id})
            for config in configs:
                await tx.execute(
                    "upsert_function",
                    {
                        "function_id": config["function_id"],
                        "app_id": app_id,
                        "config": codec.dumps(config),
                        "now": now,
                    },
                )

    async def list_functions(self) -> list[dict[str, Any]]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_functions", {})
        return [codec.loads(row["config"]) for row in rows]

    # Events

    async def insert_events(self, events: Sequence[m.EventRecord]) -> None:
        async with self._transaction() as tx:
            for event in events:
                await tx.execute("insert_event", codec.event_params(event))

    async def process_events(
        self, batch: Sequence[tuple[m.EventRecord, Sequence[m.Change]]], now: int
    ) -> m.Applied:
        applied = m.Applied()
        every_change = [c for _, changes in batch for c in changes]
        gates = gating.GatePass(every_change, locks_rows=self.locks_rows)
        async with self._transaction() as tx:
            runs = await self._lock_run_ids(
                tx, touched_runs(every_change) | await gates.runs_to_lock(tx)
            )
            keys = sorted({event.id for event, _ in batch if event.id is not None})
            if keys and self.locks_rows:
                await tx.execute("lock_event_keys", {"ids": keys})
            held = await self._lock_holds(tx, every_change)
            await gates.lock(tx, now)
            # Stored, or found unprocessed, and marked processed at once: the row lock makes a
            # concurrent processor of the same event wait, then find nothing to do.
            unique = {event.internal_id: event for event, _ in batch}
            claimed = {
                row["internal_id"]
                for row in await tx.fetch_each(
                    "claim_events", [codec.event_params(e) for e in unique.values()], {}
                )
            }
            later, parts = _Later(), []
            for event, changes in batch:
                if event.internal_id not in claimed:
                    continue
                claimed.discard(event.internal_id)  # a second copy in the batch does nothing
                if await self._is_duplicate(tx, event, now):
                    await tx.execute("mark_event_duplicate", {"internal_id": event.internal_id})
                else:
                    admitted = await gates.admit(tx, changes, now, runs, self._lock_run_ids)
                    parts.append(
                        await self._apply(tx, admitted, now, runs, held, gates, later=later)
                    )
            await self._flush(tx, later, now, runs)  # into `parts`, then gathered
            for part in parts:
                applied.extend(part)
            if held is not None:
                await holds.flush(tx, held, now)
            await gates.finish(tx, applied, runs)
        return applied

    async def _is_duplicate(self, tx: Tx, event: m.EventRecord, now: int) -> bool:
        if event.id is None:
            return False
        seen = await tx.fetch("select_event_key", {"id": event.id, "now": now})
        if seen and seen[0]["internal_id"] != event.internal_id:
            return True
        await tx.execute(
            "upsert_event_key",
            {"id": event.id, "internal_id": event.internal_id, "expires_at": now + DEDUP_WINDOW_MS},
        )
        return False

    async def unprocessed_events(self, received_before: int, limit: int) -> list[m.EventRecord]:
        async with self._autocommit() as tx:
            rows = await tx.fetch(
                "select_unprocessed_events", {"before": received_before, "limit": limit}
            )
        return [codec.event(row) for row in rows]

    async def list_events(self, name: str | None, limit: int) -> list[m.EventRecord]:
        async with self._autocommit() as tx:
            if name is None:
                rows = await tx.fetch("select_events", {"limit": limit})
            else:
                rows = await tx.fetch("select_events_named", {"name": name, "limit": limit})
        return [codec.event(row) for row in rows]

    async def waits_for_events(self, names: Sequence[str]) -> list[m.WaitRecord]:
        waits: list[m.WaitRecord] = []
        async with self._autocommit() as tx:
            for name in sorted(set(names)):
                rows = await tx.fetch("select_waits_for_event", {"event_name": name})
                waits.extend(codec.wait(row) for row in rows)
        return waits

    async def wait_candidates(
        self, events: Sequence[m.EventRecord], now: int
    ) -> dict[str, list[m.WaitRecord]]:
        names = sorted({event.name for event in events})
        if not names:
            return {}
        # Two statements at most, whatever the number of waiting runs: the paths in use (a
        # loose index scan), then one index probe per (event name, path, key of the event's
        # value) plus the unindexed waits of these names; only the first if no run waits for
        # these names. Read, not locked: applying a match is guarded.
        async with self._autocommit() as tx:
            paths: dict[str, list[str]] = {}
            unindexed: set[str] = set()
            for row in await tx.fetch("select_match_paths", {"names": names}):
                if row["match_path"] is not None:
                    paths.setdefault(row["event_name"], []).append(row["match_path"])
                if row["has_unindexed"]:
                    unindexed.add(row["event_name"])
            if not paths and not unindexed:
                return {}
            keys: dict[str, list[tuple[str, str, str]]] = {}
            for event in events:
                payload = event.payload()
                for path in paths.get(event.name, ()):
                    key = matching.event_key(payload, path)
                    if key is not None:
                        keys.setdefault(event.internal_id, []).append((event.name, path, key))
            wanted = [
                {"event_name": name, "match_path": path, "match_key": key}
                for event_keys in keys.values()
                for name, path, key in event_keys
            ]
            rows = await tx.fetch(
                "select_wait_candidates",
                {"keys": codec.dumps(wanted), "names": sorted(unindexed), "now": now},
            )
        keyed: dict[tuple[str, str, str], list[m.WaitRecord]] = {}
        unkeyed: dict[str, list[m.WaitRecord]] = {}
        for row in rows:
            wait = codec.wait(row)
            wait.run = codec.run(row)
            if wait.match_path is None or wait.match_key is None:
                unkeyed.setdefault(wait.event_name or "", []).append(wait)
            else:
                found = (wait.event_name or "", wait.match_path, wait.match_key)
                keyed.setdefault(found, []).append(wait)
        return {
            event.internal_id: [
                *(wait for key in keys.get(event.internal_id, ()) for wait in keyed.get(key, ())),
                *unkeyed.get(event.name, ()),
            ]
            for event in events
        }

    # Worker side

    async def claim_jobs(
        self, job_ids: Sequence[str], owner: str, now: int, lease_until: int
    ) -> dict[str, m.RunState]:
        # Each statement stands alone: the claim is one (it leases the jobs, marks their runs
        # Running and reads them), and the steps of a run whose job we hold do not change.
        items = [{"job_id": job_id} for job_id in dict.fromkeys(job_ids)]
        params = {"owner": owner, "now": now, "lease_until": lease_until}
        async with self._autocommit() as tx:
            claimed = await tx.fetch_each("claim_jobs", items, params)
            ended = [{"job_id": row["job_id"]} for row in claimed if row["status"] in m.TERMINAL]
            if ended:
                await tx.fetch_each("delete_jobs", ended, {})
            live = [row for row in claimed if row["status"] not in m.TERMINAL]
            with_steps = sorted({row["run_id"] for row in live if row["has_steps"]})
            steps: dict[str, list[dict[str, Any]]] = {}
            if with_steps:
                for step in await tx.fetch("select_steps_of_runs", {"run_ids": with_steps}):
                    steps.setdefault(step["run_id"], []).append(step)
        return {
            row["job_id"]: m.RunState(
                run=codec.run(row),
                steps={step["hash"]: codec.step(step) for step in steps.get(row["run_id"], ())},
                job=codec.joined_job(row["job_id"], row),
            )
            for row in live
        }

    async def renew_lease(self, job_id: str, owner: str, lease_until: int) -> bool:
        async with self._transaction() as tx:
            count = await tx.execute(
                "renew_lease", {"job_id": job_id, "owner": owner, "lease_until": lease_until}
            )
        return count > 0

    async def finish_jobs(self, finishes: Sequence[m.JobFinish], owner: str) -> set[str]:
        items = [
            _write_params(
                f.job_id, f.steps, f.events, codec.dumps(protocol.encode(f.outcome)), f.now
            )
            for f in finishes
        ]
        # One statement writes them all, so it needs no transaction around it.
        async with self._autocommit() as tx:
            rows = await tx.fetch_each("write_jobs", items, {"owner": owner})
        return {row["job_id"] for row in rows}

    async def checkpoint_job(
        self,
        job_id: str,
        owner: str,
        *,
        steps: Sequence[m.StepRecord],
        events: Sequence[m.EventRecord],
        lease_until: int,
    ) -> bool:
        return await self._write_job(job_id, owner, steps, events, lease_until=lease_until)

    async def _write_job(
        self,
        job_id: str,
        owner: str,
        steps: Sequence[m.StepRecord],
        events: Sequence[m.EventRecord],
        *,
        lease_until: int,
    ) -> bool:
        item = _write_params(job_id, steps, events, None, 0, lease_until)
        # One statement writes them all, so it needs no transaction around it.
        async with self._autocommit() as tx:
            return bool(await tx.fetch_each("write_jobs", [item], {"owner": owner}))

    # Scheduler side

    async def job_outcomes(self, job_ids: Sequence[str]) -> list[m.JobOutcome]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_job_outcomes", {"job_ids": list(job_ids)})
        by_id = {row["job_id"]: row for row in rows}
        return [
            m.JobOutcome(codec.joined_job(job_id, row), codec.run(row), codec.outcome(row))
            for job_id in job_ids
            if (row := by_id.get(job_id)) is not None
        ]

    async def apply_outcomes(
        self, batch: Sequence[tuple[str, Sequence[m.Change]]], now: int
    ) -> list[m.Applied]:
        results = []
        async with self._transaction() as tx:
            runs = await self._lock_runs(tx, [c for _, changes in batch for c in changes])
            items = [{"job_id": job_id} for job_id in dict.fromkeys(job_id for job_id, _ in batch)]
            deleted = {
                row["job_id"]: row for row in await tx.fetch_each("delete_done_jobs", items, {})
            }
            later = _Later()
            for job_id, changes in batch:
                # Popped: a second copy of the outcome in the batch finds its job gone.
                row = deleted.pop(job_id, None)
                if row is None:
                    results.append(m.Applied(done=False))
                    continue
                applied = await self._apply(tx, changes, now, runs, later=later)
                # The job no longer holds its slots: others may be admitted.
                applied.admission_keys |= _slot_keys(row)
                results.append(applied)
            await self._flush(tx, later, now, runs)
        return results

    async def stale_outcomes(self, done_before: int, limit: int) -> list[str]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_stale_outcomes", {"before": done_before, "limit": limit})
        return [row["job_id"] for row in rows]

    async def stale_jobs(self, now: int, published_before: int, limit: int) -> list[m.JobRecord]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "republish_stale_jobs", {"now": now, "before": published_before, "limit": limit}
            )
        return [codec.job(row) for row in rows]

    # Admission

    async def admit(
        self,
        keys: Sequence[str],
        now: int,
        decide: Callable[[Sequence[m.PendingJob], Mapping[str, int]], Sequence[str]],
        *,
        per_key: int,
    ) -> tuple[list[m.JobRecord], set[str]]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "select_pending_jobs", {"keys": sorted(set(keys)), "per_key": per_key}
            )
            if not rows:
                return [], set()
            waiting = sorted(
                {row["job_id"]: codec.pending_job(row) for row in rows}.values(),
                key=lambda job: (job.order_at, job.job_id),
            )
            # Every pool a candidate draws from, not only those asked for: a job is admitted
            # only with all its pools locked and counted.
            pools = sorted({slot.key for job in waiting for slot in job.slots})
            if self.locks_rows:
                await tx.execute("lock_slot_keys", {"keys": pools})
            in_use = {
                row["key"]: int(row["used"])
                for row in await tx.fetch("count_slots_in_use", {"keys": pools})
            }
            chosen = list(decide(waiting, in_use))
            admitted = (
                await tx.fetch("admit_jobs", {"job_ids": chosen, "now": now}) if chosen else []
            )
        waiting_per_pool: dict[str, int] = {}
        for job in waiting:
            for slot in job.slots:
                waiting_per_pool[slot.key] = waiting_per_pool.get(slot.key, 0) + 1
        more = {key for key, count in waiting_per_pool.items() if count >= per_key}
        return [codec.job(row) for row in admitted], more if admitted else set()

    async def pending_slot_keys(self, limit: int) -> list[str]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_pending_keys", {"limit": limit})
        return [row["key"] for row in rows]

    # Timers

    async def claim_timers(
        self, owner: str, now: int, claim_until: int, limit: int
    ) -> list[m.TimerRecord]:
        async with self._transaction() as tx:
            rows = await tx.fetch(
                "claim_timers", {"owner": owner, "now": now, "until": claim_until, "limit": limit}
            )
        return sorted((codec.timer(row) for row in rows), key=lambda timer: timer.due_at)

    async def fire_timer(
        self, timer: m.TimerRecord, owner: str, changes: Sequence[m.Change], now: int
    ) -> m.Applied:
        async with self._transaction() as tx:
            runs = await self._lock_runs(tx, changes)
            held = await self._lock_holds(tx, changes)
            if not await tx.execute(
                "delete_claimed_timer", {"timer_id": timer.timer_id, "owner": owner}
            ):
                return m.Applied(done=False)
            # The gates of a run that a hold's timer starts (singleton, throttle).
            gates = gating.GatePass([], locks_rows=self.locks_rows)
            applied = await self._apply(tx, changes, now, runs, held, gates)
            if held is not None:
                await holds.flush(tx, held, now)
            await gates.finish(tx, applied, runs)
            return applied

    async def fire_timers(
        self, batch: Sequence[tuple[m.TimerRecord, Sequence[m.Change]]], owner: str, now: int
    ) -> list[m.Applied]:
        results = []
        async with self._transaction() as tx:
            runs = await self._lock_runs(tx, [c for _, changes in batch for c in changes])
            for timer, changes in batch:
                if await tx.execute(
                    "delete_claimed_timer", {"timer_id": timer.timer_id, "owner": owner}
                ):
                    results.append(await self._apply(tx, changes, now, runs))
                else:
                    results.append(m.Applied(done=False))
        return results

    async def apply_changes(self, batch: Sequence[Sequence[m.Change]], now: int) -> list[m.Applied]:
        results = []
        async with self._transaction() as tx:
            runs = await self._lock_runs(tx, [c for changes in batch for c in changes])
            for changes in batch:
                results.append(await self._apply(tx, changes, now, runs))
        return results

    async def add_timers(self, timers: Sequence[m.TimerRecord]) -> None:
        async with self._transaction() as tx:
            for timer in timers:
                await tx.execute("insert_timer", codec.timer_params(timer))

    async def next_timer_due(self) -> int | None:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_next_timer", {})
        return rows[0]["due_at"] if rows and rows[0]["due_at"] is not None else None

    # API

    async def get_run(self, run_id: str) -> m.RunRecord | None:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_run", {"run_id": run_id})
        return codec.run(rows[0]) if rows else None

    async def runs_for_event(self, event_id: str) -> list[m.RunRecord]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_runs_for_event", {"event_id": event_id})
        return [codec.run(row) for row in rows]

    async def run_steps(self, run_id: str) -> list[m.StepRecord]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_steps", {"run_id": run_id})
        return [codec.step(row) for row in rows]

    async def cancel_run(
        self, run_id: str, events: Sequence[m.EventRecord], error: protocol.ErrorInfo, now: int
    ) -> tuple[m.RunRecord | None, m.Applied]:
        before = await self.get_run(run_id)
        if before is None:
            return None, m.Applied(done=False)
        parent = before.parent["run_id"] if before.parent else None
        finish = m.FinishRun(run_id, m.CANCELLED, error=error, parent_run_id=parent)
        changes: list[m.Change] = [finish, m.AddEvents(list(events))]
        async with self._transaction() as tx:
            runs = await self._lock_runs(tx, changes)
            applied = await self._apply(tx, changes, now, runs)
            rows = await tx.fetch("select_run", {"run_id": run_id})
        return (codec.run(rows[0]) if rows else None), applied

    async def resolve_signal(
        self, signal: str, data: Any, now: int
    ) -> tuple[str | None, m.Applied]:
        async with self._autocommit() as tx:
            waiting = await tx.fetch("select_signal_wait", {"signal": signal})
        if not waiting:
            return None, m.Applied(done=False)
        run_id, step_hash = waiting[0]["run_id"], waiting[0]["step_hash"]
        change = m.ResolveStep(run_id, step_hash, output=data)
        async with self._transaction() as tx:
            runs = await self._lock_runs(tx, [change])
            # The wait may have gone (a timeout, another signal) while we took the lock.
            if not await tx.fetch("delete_signal_wait", {"signal": signal}):
                return None, m.Applied(done=False)
            change.require_wait = False
            return run_id, await self._apply(tx, [change], now, runs)

    # Bulk cancellations

    async def create_cancellation(
        self, cancellation: m.CancellationRecord, timer: m.TimerRecord
    ) -> None:
        async with self._transaction() as tx:
            await tx.execute("insert_cancellation", dataclasses.asdict(cancellation))
            await tx.execute("insert_timer", codec.timer_params(timer))

    async def get_cancellation(self, cancellation_id: str) -> m.CancellationRecord | None:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_cancellation", {"cancellation_id": cancellation_id})
        return codec.cancellation(rows[0]) if rows else None

    async def cancellation_batch(
        self, cancellation_id: str, limit: int
    ) -> tuple[m.CancellationRecord | None, list[m.RunRecord]]:
        cancellation = await self.get_cancellation(cancellation_id)
        if cancellation is None:
            return None, []
        params = {
            "function_id": cancellation.function_id,
            "after_at": cancellation.cursor_at,
            "after_id": cancellation.cursor_id,
            "before_at": cancellation.started_before,
            "limit": limit,
        }
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_cancellation_runs", params)
        return cancellation, [codec.run(row) for row in rows]

    async def fire_cancellation(
        self,
        timer: m.TimerRecord,
        owner: str,
        changes: Sequence[m.Change],
        *,
        cursor: tuple[int, str],
        completed: bool,
        now: int,
    ) -> m.Applied:
        async with self._transaction() as tx:
            runs = await self._lock_runs(tx, changes)
            if not await tx.execute(
                "delete_claimed_timer", {"timer_id": timer.timer_id, "owner": owner}
            ):
                return m.Applied(done=False)
            applied = await self._apply(tx, changes, now, runs)
            progress = {
                "cancellation_id": timer.run_id,
                "cursor_at": cursor[0],
                "cursor_id": cursor[1],
                "count": len(applied.cancelled),
                "status": m.COMPLETED if completed else m.RUNNING,
                "now": now,
            }
            await tx.execute("advance_cancellation", progress)
        # The batch is applied, though a run in it that had ended was left alone.
        applied.done = True
        return applied

    # Gates (rate limit, idempotency, singleton)

    async def run_refusals(self, event_id: str) -> dict[str, str]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_run_refusals", {"event_id": event_id})
        return {row["function_id"]: row["reason"] for row in rows}

    # Flow-control visibility

    async def pending_jobs_by_function(self) -> dict[str, int]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("count_pending_jobs_by_function", {})
        return {row["function_id"]: int(row["count"]) for row in rows}

    async def slots_in_use_by_function(self) -> dict[str, int]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("count_slots_in_use_by_function", {})
        return {row["function_id"]: int(row["count"]) for row in rows}

    async def run_hold(self, run_id: str) -> views.RunHold | None:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_run_hold", {"run_id": run_id})
        # A pending job comes first: a run past its start timer has no timer left.
        rows.sort(key=lambda row: row["rule"] != "concurrency")
        return views.RunHold(rows[0]["rule"], int(rows[0]["at"])) if rows else None

    async def runs_listing_event(
        self, payload_id: str, function_ids: Sequence[str], since: int
    ) -> dict[str, str]:
        if not function_ids:
            return {}
        # The event as a run's `events` column spells it (compact JSON, see codec.dumps).
        needle = (codec.dumps({"id": payload_id}) or "")[1:-1]
        params = {"needle": needle, "function_ids": sorted(function_ids), "since": since}
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_runs_listing_event", params)
        return {row["function_id"]: row["run_id"] for row in rows}

    async def first_runs_since(self, function_id: str, since: int, limit: int) -> list[m.RunRecord]:
        params = {"function_id": function_id, "since": since, "limit": limit}
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_first_runs_since", params)
        return [codec.run(row) for row in rows]

    async def forget_gate_state(self, now: int, limit: int) -> int:
        async with self._autocommit() as tx:
            return await tx.execute("delete_expired_gate_state", {"now": now, "limit": limit})

    async def forget_history(self, before: int, limit: int) -> views.Forgotten:
        params = {"before": before, "limit": limit}
        # Two transactions: runs go first, so their events are free to go in the second.
        async with self._transaction() as tx:
            runs = await tx.execute("forget_runs", params)
        async with self._transaction() as tx:
            events = await tx.execute("forget_events", params)
        return views.Forgotten(runs=runs, events=events)

    # Dashboard reads

    async def list_runs(
        self,
        *,
        page: views.RunPage,
        limit: int,
        function_id: str | None = None,
        status: str | None = None,
        from_ms: int = 0,
    ) -> list[m.RunRecord]:
        params = {
            "before_at": page.before_at,
            "before_id": page.before_id,
            "from_ms": from_ms,
            "status": status,
            "limit": limit,
        }
        async with self._autocommit() as tx:
            if function_id is None:
                rows = await tx.fetch("select_runs_page", params)
            else:
                rows = await tx.fetch(
                    "select_function_runs_page", {**params, "function_id": function_id}
                )
        return [codec.run(row) for row in rows]

    async def get_event(self, internal_id: str) -> m.EventRecord | None:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_event", {"internal_id": internal_id})
        return codec.event(rows[0]) if rows else None

    async def event_states(self, internal_ids: Sequence[str]) -> dict[str, views.EventState]:
        params = {"internal_ids": list(internal_ids)}
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_event_states", params)
            runs = await tx.fetch("select_event_run_ids", params)
        run_ids: dict[str, list[str]] = {}
        for run in runs:
            run_ids.setdefault(run["event_id"], []).append(run["run_id"])
        return {
            row["internal_id"]: views.EventState(
                internal_id=row["internal_id"],
                received_at=row["received_at"],
                processed=bool(row["processed"]),
                duplicate=bool(row["duplicate"]),
                run_ids=tuple(run_ids.get(row["internal_id"], ())),
            )
            for row in rows
        }

    async def step_deadlines(self, run_id: str) -> dict[str, int]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_step_deadlines", {"run_id": run_id})
        return {row["step_hash"]: row["due_at"] for row in rows}

    async def function_run_counts(self, since: int) -> dict[str, dict[str, int]]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_function_run_counts", {"since": since})
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row["function_id"], {})[row["status"]] = int(row["count"])
        return counts

    async def record_heartbeat(
        self, process_id: str, kind: str, app_ids: Sequence[str], now: int
    ) -> None:
        params = {
            "process_id": process_id,
            "kind": kind,
            "app_ids": codec.dumps(sorted(app_ids)),
            "now": now,
            "forget_before": now - PROCESS_MEMORY_MS,
        }
        async with self._transaction() as tx:
            await tx.execute("upsert_process", params)

    async def list_processes(self, seen_after: int) -> list[views.ProcessRecord]:
        async with self._autocommit() as tx:
            rows = await tx.fetch("select_processes", {"seen_after": seen_after})
        return [
            views.ProcessRecord(
                process_id=row["process_id"],
                kind=row["kind"],
                app_ids=tuple(codec.loads(row["app_ids"])),
                started_at=row["started_at"],
                seen_at=row["seen_at"],
            )
            for row in rows
        ]

    async def queue_depths(self) -> views.QueueDepths:
        async with self._autocommit() as tx:
            jobs = await tx.fetch("select_queued_jobs_by_app", {})
            events = await tx.fetch("count_unprocessed_events", {})
        return views.QueueDepths(
            jobs_by_app={row["app_id"]: int(row["count"]) for row in jobs},
            unprocessed_events=int(events[0]["count"]) if events else 0,
        )

    # Applying changes

    async def _flush(self, tx: Tx, later: _Later, now: int, runs: dict[str, str]) -> None:
        """Makes the writes `later` collected, one statement per kind."""
        finishes, later.finishes = later.finishes, []
        if finishes:
            ending = {change.run_id: (change, applied) for change, applied in finishes}
            items = [_finish_params(change, now) for change, _ in ending.values()]
            ended = {row["run_id"]: row for row in await tx.fetch_each("finish_runs", items, {})}
            for run_id, (change, applied) in ending.items():
                row = ended.get(run_id)
                if row is None:
                    applied.done = False
                    continue
                await self._finished(tx, change, row, now, applied, runs)
        new_runs, later.runs = later.runs, []
        if new_runs:
            into: dict[str, tuple[dict[str, Any], m.Applied]] = {}
            for params, applied in new_runs:
                into.setdefault(params["run_id"], (params, applied))  # a repeat does nothing
            rows = await tx.fetch_each("insert_runs", [p for p, _ in into.values()], {})
            for row in rows:
                _collect_jobs([row], into[row["run_id"]][1])
        quiet, later.quiet = later.quiet, []
        if quiet:
            by_id = {event.internal_id: (event, applied) for event, applied in quiet}
            items = [codec.event_params(event) for event, _ in quiet]
            for row in await tx.fetch_each("insert_quiet_events", items, {}):
                # Stored unprocessed: a run waits for an event of its name.
                if not row["processed"]:
                    event, applied = by_id[row["internal_id"]]
                    applied.events.append(event)

    async def _lock_runs(self, tx: Tx, changes: Sequence[m.Change]) -> dict[str, str]:
        """Locks the rows of the runs these changes touch (the lock order's first step) and
        returns their statuses; a run not in the answer does not exist."""
        return await self._lock_run_ids(tx, touched_runs(changes))

    async def _lock_run_ids(self, tx: Tx, run_ids: set[str]) -> dict[str, str]:
        if not run_ids:
            return {}
        rows = await tx.fetch("lock_runs", {"run_ids": sorted(run_ids)})
        return {row["run_id"]: row["status"] for row in rows}

    async def _lock_holds(self, tx: Tx, changes: Sequence[m.Change]) -> holds.Locked | None:
        """Locks the flow-control state of the holds these changes touch (the lock order's third
        step); no statement when there are none."""
        return await holds.lock(tx, changes) if holds.has_holds(changes) else None

    async def _apply(
        self,
        tx: Tx,
        changes: Sequence[m.Change],
        now: int,
        runs: dict[str, str],
        held: holds.Locked | None = None,
        gates: gating.GatePass | None = None,
        *,
        later: _Later | None = None,
    ) -> m.Applied:
        """Applies changes whose runs `_lock_runs` locked, and whose holds `_lock_holds` locked
        into `held`; the runs holds start pass `gates`; `runs` is updated as they end. With
        `later`, the writes it takes are left to its `flush`, which the caller owes."""
        applied = m.Applied()
        for change in changes:
            if _is_for_ended_run(change, runs, applied):
                continue
            match change:
                case m.CreateRun():
                    await self._create_run(tx, change, now, applied, runs, later)
                case m.ResolveStep():
                    await self._resolve_step(tx, change, now, applied)
                case m.AddWait():
                    await self._add_wait(tx, change, now, applied, runs)
                case m.ScheduleRetry():
                    await self._schedule_retry(tx, change)
                case m.Dispatch():
                    await self._dispatch(tx, change.run_id, change.attempt, now, applied)
                case m.FinishRun():
                    await self._finish_run(tx, change, now, applied, runs, later)
                case m.AddEvents():
                    await self._add_events(tx, change, applied, later)
                case m.AddTimer():
                    await tx.execute("insert_timer", codec.timer_params(change.timer))
                case m.HoldDebounced() | m.AddToBatch() | m.StartHeld():
                    await self._apply_hold(tx, change, now, applied, runs, held, gates)
        return applied

    async def _apply_hold(
        self,
        tx: Tx,
        change: m.HoldDebounced | m.AddToBatch | m.StartHeld,
        now: int,
        applied: m.Applied,
        runs: dict[str, str],
        held: holds.Locked | None,
        gates: gating.GatePass | None,
    ) -> None:
        if held is None or gates is None:
            raise ValueError(f"{change!r} applied without its hold and gates locked")
        if not isinstance(change, m.StartHeld):
            effect = m.DEBOUNCED if isinstance(change, m.HoldDebounced) else m.BATCHED
            applied.flow.append(m.FlowEffect(change.function_id, effect))
        started = await holds.apply(tx, change, now, held)
        if started:
            admitted = await gates.admit_started(tx, started, now, runs, self._lock_run_ids)
            applied.extend(await self._apply(tx, admitted, now, runs))

    async def _add_events(
        self, tx: Tx, change: m.AddEvents, applied: m.Applied, later: _Later | None = None
    ) -> None:
        for event in change.events:
            if not change.quiet:
                await tx.execute("insert_event", codec.event_params(event))
                applied.events.append(event)
                continue
            if later is not None:
                later.quiet.append((event, applied))
                continue
            # No function triggers on it: it needs no trip through the scheduler, unless a run
            # waits for an event of its name (then it is stored unprocessed).
            rows = await tx.fetch_each("insert_quiet_events", [codec.event_params(event)], {})
            if rows and not rows[0]["processed"]:
                applied.events.append(event)

    async def _create_run(
        self,
        tx: Tx,
        change: m.CreateRun,
        now: int,
        applied: m.Applied,
        runs: dict[str, str],
        later: _Later | None = None,
    ) -> None:
        params = {
            "run_id": change.run_id,
            "function_id": change.function_id,
            "app_id": change.app_id,
            "event_id": change.event_id,
            "events": codec.dumps(change.events),
            "parent": codec.dumps(change.parent),
            "now": now,
        }
        slots = {**codec.slot_params(change.slots), "priority_ms": change.priority_ms}
        if later is not None and _is_plain(change):
            # Nothing later in this transaction reads the run: created with the others.
            later.runs.append(({**params, **slots, "job_id": new_id(now)}, applied))
            runs[change.run_id] = m.QUEUED
            return
        timers = _deadlines(change, now)
        if change.start_at is not None:
            # Held (a throttle): the run now, its first job when the timer fires.
            created = bool(await tx.execute("insert_held_run", {**params, **slots}))
            timers.append(
                m.TimerRecord(new_id(now), m.TIMER_START, change.run_id, "", change.start_at)
            )
        else:
            # One statement: the run, and its first job only if the run is new.
            item = {**params, **slots, "job_id": new_id(now)}
            rows = await tx.fetch_each("insert_runs", [item], {})
            _collect_jobs(rows, applied)
            created = bool(rows)
        if not created:
            return
        runs[change.run_id] = m.QUEUED
        if change.start_at is not None:
            applied.flow.append(m.FlowEffect(change.function_id, m.THROTTLED))
        for timer in timers:
            await tx.execute("insert_timer", codec.timer_params(timer))
        await _listen(tx, change, now)

    async def _dispatch(
        self, tx: Tx, run_id: str, attempt: int, now: int, applied: m.Applied
    ) -> None:
        job_id = new_id(now)
        rows = await tx.fetch(
            "insert_job_if_idle",
            {"job_id": job_id, "run_id": run_id, "attempt": attempt, "now": now},
        )
        _collect_jobs(rows, applied)

    async def _resolve_step(
        self, tx: Tx, change: m.ResolveStep, now: int, applied: m.Applied
    ) -> None:
        step = {"run_id": change.run_id, "step_hash": change.step_hash}
        # Timer before wait: the order in which a firing timeout locks them, so that a timeout
        # and its event arriving together wait for each other instead of deadlocking.
        await tx.execute("delete_step_timers", step)
        if change.require_wait and not await tx.fetch("delete_wait", step):
            return
        status = m.FAILED if change.error is not None else m.COMPLETED
        await tx.execute(
            "complete_waiting_step",
            {
                "run_id": change.run_id,
                "hash": change.step_hash,
                "status": status,
                "output": codec.dumps(change.output),
                "error": codec.error_text(change.error),
                "now": now,
            },
        )
        await self._dispatch(tx, change.run_id, 0, now, applied)

    async def _add_wait(
        self, tx: Tx, change: m.AddWait, now: int, applied: m.Applied, runs: dict[str, str]
    ) -> None:
        query = "insert_step_if_absent" if change.offload is None else "insert_waiting_step"
        if not await tx.execute(query, codec.step_params(change.run_id, change.step)):
            return
        if change.offload is not None:
            applied.offloads.append(change.offload)
        if change.wait is not None and not await tx.execute(
            "insert_wait", codec.wait_params(change.wait)
        ):
            error = protocol.ErrorInfo(
                "SignalTakenError", f"another run already waits on signal {change.wait.signal!r}"
            )
            resolve = m.ResolveStep(
                change.run_id, change.step.hash, error=error, require_wait=False
            )
            await self._resolve_step(tx, resolve, now, applied)
            return
        if change.timer is not None:
            await tx.execute("insert_timer", codec.timer_params(change.timer))
        for event in change.events:
            await tx.execute("insert_event", codec.event_params(event))
        applied.events.extend(change.events)

    async def _schedule_retry(self, tx: Tx, change: m.ScheduleRetry) -> None:
        step = change.step
        if change.require_wait and step is not None:
            ids = {"run_id": change.run_id, "step_hash": step.hash}
            await tx.execute("delete_step_timers", ids)
            if not await tx.fetch("delete_wait", ids):
                return
        if step is not None and not await tx.execute(
            "record_failed_attempt", codec.step_params(change.run_id, step)
        ):
            return
        if change.run_attempt is not None:
            await tx.execute(
                "set_run_attempt", {"run_id": change.run_id, "attempt": change.run_attempt}
            )
        await tx.execute("insert_timer", codec.timer_params(change.timer))

    async def _finish_run(
        self,
        tx: Tx,
        change: m.FinishRun,
        now: int,
        applied: m.Applied,
        runs: dict[str, str],
        later: _Later | None = None,
    ) -> None:
        if later is not None and change.parent_run_id is None and change.status != m.CANCELLED:
            # Its row is locked and not ended (else the change was dropped): it will end. No
            # parent to resume, and nothing later in the transaction reads it but `runs`.
            later.finishes.append((change, applied))
            runs[change.run_id] = change.status
            return
        rows = await tx.fetch("finish_run", _finish_params(change, now))
        if not rows:
            applied.done = False
            return
        await self._finished(tx, change, rows[0], now, applied, runs)

    async def _finished(
        self,
        tx: Tx,
        change: m.FinishRun,
        row: Mapping[str, Any],
        now: int,
        applied: m.Applied,
        runs: dict[str, str],
    ) -> None:
        """What follows a run's end: its slots freed, and its parent, if any, resumed."""
        runs[change.run_id] = change.status
        if change.status == m.CANCELLED:
            applied.cancelled.append(m.RunRef(change.run_id, row["function_id"], row["app_id"]))
        # Its jobs are gone, and with them any slots they held.
        applied.admission_keys |= _slot_keys(row)
        parent = codec.loads(row["parent"])
        if parent and parent["run_id"] not in runs:
            # Not named by the change (`parent_run_id`), so not locked in order: lock it now.
            runs.update(await self._lock_run_ids(tx, {parent["run_id"]}))
        if parent and runs.get(parent["run_id"], m.CANCELLED) not in m.TERMINAL:
            resolve = m.ResolveStep(parent["run_id"], parent["step_hash"])
            if change.status == m.COMPLETED:
                resolve.output = change.output
            elif change.status == m.FAILED and change.error is not None:
                resolve.error = change.error
            else:
                resolve.error = protocol.ErrorInfo(
                    "InvokeCancelledError",
                    f"invoked run {change.run_id} was {change.status.lower()}",
                )
            await self._resolve_step(tx, resolve, now, applied)


def _finish_params(change: m.FinishRun, now: int) -> dict[str, Any]:
    return {
        "run_id": change.run_id,
        "status": change.status,
        "output": codec.dumps(change.output),
        "error": codec.error_text(change.error),
        "now": now,
    }


async def _listen(tx: Tx, change: m.CreateRun, now: int) -> None:
    """Registers a new run's cancel listeners (one statement; none for a run without)."""
    if not change.listeners:
        return
    rows = []
    for listener in change.listeners:
        params = codec.wait_params(listener.wait)
        if listener.timeout_ms is not None:
            params["expires_at"] = now + listener.timeout_ms
        rows.append(params)
    await tx.execute("insert_listeners", {"listeners": codec.dumps(rows)})


def _write_params(
    job_id: str,
    steps: Sequence[m.StepRecord],
    events: Sequence[m.EventRecord],
    outcome: str | None,
    now: int,
    lease_until: int = 0,
) -> dict[str, Any]:
    """A job's write (`write_job`, `write_jobs`): a checkpoint without `outcome`."""
    return {
        "job_id": job_id,
        "steps": codec.dumps([codec.step_params("", step) for step in codec.folded(steps)]),
        "events": codec.dumps([codec.event_params(event) for event in events]),
        "finish": outcome is not None,
        "outcome": outcome,
        "now": now,
        "lease_until": lease_until,
    }


def _is_plain(change: m.CreateRun) -> bool:
    """A run that starts at once with nothing beside it: no gate writes its row afterwards,
    and it has no timers or listeners to register once it exists."""
    return (
        not change.gates
        and change.start_at is None
        and change.start_timeout_ms is None
        and change.finish_timeout_ms is None
        and not change.listeners
    )


def _collect_jobs(rows: Sequence[Mapping[str, Any]], applied: m.Applied) -> None:
    """New jobs: queued ones to publish; pending ones wait for admission into their pools."""
    for row in rows:
        if row["status"] == m.JOB_PENDING:
            applied.admission_keys |= _slot_keys(row)
        else:
            applied.jobs.append(codec.job(row))


def _slot_keys(row: Mapping[str, Any]) -> set[str]:
    return {key for key in (row["slot_key_1"], row["slot_key_2"]) if key is not None}


def _deadlines(change: m.CreateRun, now: int) -> list[m.TimerRecord]:
    """The timers of a new run's `timeouts`. The finish deadline counts from the first step's
    start, unknown yet: its timer first fires `finish` after the run's creation (no earlier
    than the deadline) and moves itself to the real deadline then."""
    timers = []
    for name, limit in (("start", change.start_timeout_ms), ("finish", change.finish_timeout_ms)):
        if limit is not None:
            timer_id = new_id(now)
            timers.append(
                m.TimerRecord(
                    timer_id, m.TIMER_TIMEOUT, change.run_id, name, now + limit, {"ms": limit}
                )
            )
    return timers
