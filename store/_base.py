from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

from tideflow._core import protocol
from tideflow._core.protocol import ErrorInfo

from . import _heartbeat
from ._models import (
    Applied,
    CancellationRecord,
    Change,
    EventRecord,
    JobFinish,
    JobOutcome,
    JobRecord,
    PendingJob,
    RunRecord,
    RunState,
    StepRecord,
    TimerRecord,
    WaitRecord,
)
from ._views import EventState, Forgotten, ProcessRecord, QueueDepths, RunHold, RunPage


class Store(abc.ABC):
    """Everything tideflow keeps. Each method is one atomic transaction; "idempotent" means a
    second call with the same arguments changes nothing more."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connects. Raises `StoreConnectionError` if the database cannot be reached."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Closes connections; safe to call twice."""

    @abc.abstractmethod
    async def migrate(self) -> None:
        """Creates or upgrades the schema. Idempotent, and safe from several processes at once."""

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether the database answers now."""

    # Function registry

    @abc.abstractmethod
    async def register_functions(
        self, app_id: str, configs: Sequence[dict[str, Any]], now: int
    ) -> None:
        """Replaces the app's function configs with `configs`. Idempotent."""

    @abc.abstractmethod
    async def list_functions(self) -> list[dict[str, Any]]:
        """Every registered function's config."""

    # Events

    @abc.abstractmethod
    async def insert_events(self, events: Sequence[EventRecord]) -> None:
        """Stores events as accepted and not yet processed. Idempotent per `internal_id`."""

    @abc.abstractmethod
    async def process_events(
        self, batch: Sequence[tuple[EventRecord, Sequence[Change]]], now: int
    ) -> Applied:
        """For each event, in order: stores it if new; if not processed yet, applies its
        changes (unless its `id` was seen in the last 24 h: then it is kept as a duplicate and
        nothing else happens) and marks it processed. A processed event is skipped, so a
        redelivered event changes nothing. Holds (debounce, batching) are read, decided by
        their changes' rules and written in the same transaction, the holds' rows locked
        first, so that a concurrent transaction on the same key waits for this one."""

    @abc.abstractmethod
    async def unprocessed_events(self, received_before: int, limit: int) -> list[EventRecord]:
        """Accepted events not processed yet (their notification may have been lost)."""

    @abc.abstractmethod
    async def list_events(self, name: str | None, limit: int) -> list[EventRecord]:
        """Events, newest first, optionally of one name."""

    @abc.abstractmethod
    async def waits_for_events(self, names: Sequence[str]) -> list[WaitRecord]:
        """The event waits that events of these names could resolve."""

    @abc.abstractmethod
    async def wait_candidates(
        self, events: Sequence[EventRecord], now: int
    ) -> dict[str, list[WaitRecord]]:
        """By event internal id: the event waits and cancel listeners (with their runs, not
        ended, listeners not expired at `now`) that the event may match: those indexed by the
        key of its value at their path, and those of its name with no index. Their
        expressions are left to the caller."""

    # Jobs: the worker's side

    @abc.abstractmethod
    async def claim_jobs(
        self, job_ids: Sequence[str], owner: str, now: int, lease_until: int
    ) -> dict[str, RunState]:
        """Leases each queued job (or one whose lease has lapsed) to `owner`, marking its run
        Running, in one statement for all; returns the states of the runs of those it leased.
        A job that is gone, leased by a live owner, or whose run has ended is not in the answer
        (a job of an ended run is deleted)."""

    async def claim_job(
        self, job_id: str, owner: str, now: int, lease_until: int
    ) -> RunState | None:
        """`claim_jobs` for one job: its run's state, or None."""
        return (await self.claim_jobs([job_id], owner, now, lease_until)).get(job_id)

    @abc.abstractmethod
    async def renew_lease(self, job_id: str, owner: str, lease_until: int) -> bool:
        """Extends `owner`'s lease; False if it no longer holds it."""

    @abc.abstractmethod
    async def finish_jobs(self, finishes: Sequence[JobFinish], owner: str) -> set[str]:
        """Records, for each job, the steps it executed, the events it sent and its outcome,
        atomically per job, if `owner` still holds the lease; returns the ids of the jobs
        written (a cancelled run has no jobs, and a lapsed lease may have gone to another
        worker). A step already Completed or Failed keeps its first result; an event already
        stored is kept. Idempotent. One statement for all of them where the backend can."""

    async def finish_job(
        self,
        job_id: str,
        owner: str,
        *,
        steps: Sequence[StepRecord],
        events: Sequence[EventRecord],
        outcome: protocol.Outcome,
        now: int,
    ) -> bool:
        """`finish_jobs` for one job: whether it was written."""
        finish = JobFinish(job_id, list(steps), list(events), outcome, now)
        return job_id in await self.finish_jobs([finish], owner)

    @abc.abstractmethod
    async def checkpoint_job(
        self,
        job_id: str,
        owner: str,
        *,
        steps: Sequence[StepRecord],
        events: Sequence[EventRecord],
        lease_until: int,
    ) -> bool:
        """Records finished steps and the events they sent while the job goes on, atomically,
        and extends the lease to `lease_until` (never shortens it), if `owner` still holds it;
        False if not. The same rules as `finish_job` for steps already recorded. Idempotent."""

    # Jobs: the scheduler's side

    @abc.abstractmethod
    async def job_outcomes(self, job_ids: Sequence[str]) -> list[JobOutcome]:
        """The written outcomes, not yet applied, of these jobs."""

    @abc.abstractmethod
    async def apply_outcomes(
        self, batch: Sequence[tuple[str, Sequence[Change]]], now: int
    ) -> list[Applied]:
        """Applies the changes decided for each job's outcome, once, all in one transaction:
        an item's `done` is False if it had been applied already."""

    async def apply_outcome(self, job_id: str, changes: Sequence[Change], now: int) -> Applied:
        """`apply_outcomes` for one job."""
        (applied,) = await self.apply_outcomes([(job_id, changes)], now)
        return applied

    @abc.abstractmethod
    async def stale_outcomes(self, done_before: int, limit: int) -> list[str]:
        """Jobs whose outcome was written before `done_before` and is still not applied."""

    @abc.abstractmethod
    async def stale_jobs(self, now: int, published_before: int, limit: int) -> list[JobRecord]:
        """Jobs to publish again: queued and published before `published_before`, or leased
        with a lapsed lease. Marks them published now, so concurrent sweeps share the work."""

    # Admission

    @abc.abstractmethod
    async def admit(
        self,
        keys: Sequence[str],
        now: int,
        decide: Callable[[Sequence[PendingJob], Mapping[str, int]], Sequence[str]],
        *,
        per_key: int,
    ) -> tuple[list[JobRecord], set[str]]:
        """Admits pending jobs of these concurrency pools, in one transaction: reads the first
        `per_key` waiting jobs of each pool (in line order) and, under the pools' locks, the
        slots in use; `decide` picks the jobs to admit from those; they become queued. Returns
        the admitted jobs, to publish, and the pools that may hold more waiting jobs."""

    @abc.abstractmethod
    async def pending_slot_keys(self, limit: int) -> list[str]:
        """Concurrency pools that have jobs waiting for admission."""

    # Timers

    @abc.abstractmethod
    async def claim_timers(
        self, owner: str, now: int, claim_until: int, limit: int
    ) -> list[TimerRecord]:
        """Claims due timers for `owner` until `claim_until`; skips those claimed by others."""

    @abc.abstractmethod
    async def fire_timer(
        self, timer: TimerRecord, owner: str, changes: Sequence[Change], now: int
    ) -> Applied:
        """Deletes a timer `owner` claimed and applies its changes; `done` False if it was gone
        (a hold's timer is gone once an event has moved it, or its hold has started)."""

    @abc.abstractmethod
    async def fire_timers(
        self, batch: Sequence[tuple[TimerRecord, Sequence[Change]]], owner: str, now: int
    ) -> list[Applied]:
        """`fire_timer` for many timers whose changes touch only their runs (sleeps, waits,
        retries, starts), in one transaction; an item's `done` is False if its timer was gone."""

    @abc.abstractmethod
    async def apply_changes(self, batch: Sequence[Sequence[Change]], now: int) -> list[Applied]:
        """Applies each item's changes (which touch only their runs: results of offloaded
        requests), all in one transaction; a change for a run that has ended is dropped.
        Idempotent as the changes are (a resolved step's second result finds no wait)."""

    @abc.abstractmethod
    async def add_timers(self, timers: Sequence[TimerRecord]) -> None:
        """Adds timers; one already there with the same (kind, run_id, step_hash) is kept."""

    @abc.abstractmethod
    async def next_timer_due(self) -> int | None:
        """The earliest due time of any timer."""

    # Reads and commands of the HTTP API

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> RunRecord | None:
        """A run, or None."""

    @abc.abstractmethod
    async def runs_for_event(self, event_id: str) -> list[RunRecord]:
        """Runs the event started, oldest first."""

    @abc.abstractmethod
    async def run_steps(self, run_id: str) -> list[StepRecord]:
        """A run's steps in the order they were recorded."""

    @abc.abstractmethod
    async def cancel_run(
        self, run_id: str, events: Sequence[EventRecord], error: ErrorInfo, now: int
    ) -> tuple[RunRecord | None, Applied]:
        """Cancels a run that has not ended, with `error`, storing `events`: in one transaction
        its waits, timers and jobs go (a worker holding its job loses the lease). Returns the
        run after it (None if unknown); `done` False if it had ended; `cancelled` names it."""

    @abc.abstractmethod
    async def resolve_signal(self, signal: str, data: Any, now: int) -> tuple[str | None, Applied]:
        """Resumes the run waiting on `signal` with `data`; None if no run waits on it."""

    # Bulk cancellations: asked through the API, worked through by the scheduler in batches

    @abc.abstractmethod
    async def create_cancellation(
        self, cancellation: CancellationRecord, timer: TimerRecord
    ) -> None:
        """Stores a bulk cancellation with the timer that drives its first batch, together."""

    @abc.abstractmethod
    async def get_cancellation(self, cancellation_id: str) -> CancellationRecord | None:
        """A bulk cancellation with its progress, or None."""

    @abc.abstractmethod
    async def cancellation_batch(
        self, cancellation_id: str, limit: int
    ) -> tuple[CancellationRecord | None, list[RunRecord]]:
        """A cancellation and up to `limit` runs of its range after its cursor, ended or not,
        in (queued_at, run_id) order; a read, locking nothing."""

    @abc.abstractmethod
    async def fire_cancellation(
        self,
        timer: TimerRecord,
        owner: str,
        changes: Sequence[Change],
        *,
        cursor: tuple[int, str],
        completed: bool,
        now: int,
    ) -> Applied:
        """As `fire_timer` for a bulk cancellation's timer, and in the same transaction moves
        its cursor, adds the runs the changes cancelled (those not ended meanwhile) to its
        count, and marks it Completed if so told. `done` False, and nothing changed, if the
        timer was no longer `owner`'s: then another scheduler has the batch."""

    # Gates (rate limit, idempotency, singleton): their state is written by `process_events`

    @abc.abstractmethod
    async def run_refusals(self, event_id: str) -> dict[str, str]:
        """Why the event started no run, per function id whose gate kept it from starting one
        ("rate_limited", "idempotent" or "singleton")."""

    # Flow-control visibility

    @abc.abstractmethod
    async def pending_jobs_by_function(self) -> dict[str, int]:
        """How many jobs wait for admission, per function id (functions with none are left
        out); one grouped read."""

    @abc.abstractmethod
    async def slots_in_use_by_function(self) -> dict[str, int]:
        """How many concurrency slots are held (jobs admitted, not ended), per function id
        (functions with none are left out); one grouped read."""

    @abc.abstractmethod
    async def run_hold(self, run_id: str) -> RunHold | None:
        """Why flow control holds the run now (a job pending admission, else a throttle's
        start timer), or None; one read."""

    @abc.abstractmethod
    async def runs_listing_event(
        self, payload_id: str, function_ids: Sequence[str], since: int
    ) -> dict[str, str]:
        """Runs of these functions, queued at or after `since`, whose events include the event
        whose payload id is `payload_id` (a debounced or batched event merged into a run that
        another event started): run id per function id."""

    @abc.abstractmethod
    async def first_runs_since(self, function_id: str, since: int, limit: int) -> list[RunRecord]:
        """The function's first `limit` runs queued at or after `since`, oldest first (the run
        a debounced burst started is the first of its key after its events)."""

    @abc.abstractmethod
    async def forget_gate_state(self, now: int, limit: int) -> int:
        """Drops up to `limit` gate state rows that expired before `now` (they read as absent
        anyway); never waits for a row another transaction holds. Returns how many went."""

    @abc.abstractmethod
    async def forget_history(self, before: int, limit: int) -> Forgotten:
        """Retention: deletes up to `limit` runs that ended (Completed, Failed, Cancelled)
        before `before`, with their steps, jobs, timers and waits (one statement on
        PostgreSQL); then, in another transaction, up to `limit` processed events received
        before `before` that no run refers to any more and no debounce or batch holds, with
        their refusals. Each transaction is short and never waits for a row another
        transaction holds (such a row goes on a later call). Idempotent."""

    # Reads of the dashboard

    @abc.abstractmethod
    async def list_runs(
        self,
        *,
        page: RunPage,
        limit: int,
        function_id: str | None = None,
        status: str | None = None,
        from_ms: int = 0,
    ) -> list[RunRecord]:
        """Up to `limit` runs queued at or after `from_ms` and strictly before `page` in
        (queued_at, run_id) order, newest first, optionally of one function and one status.
        A keyset read over an index: deep pages cost what the first does."""

    @abc.abstractmethod
    async def get_event(self, internal_id: str) -> EventRecord | None:
        """An event by its engine id, or None."""

    @abc.abstractmethod
    async def event_states(self, internal_ids: Sequence[str]) -> dict[str, EventState]:
        """What became of each of these events that is stored (unknown ids are left out)."""

    @abc.abstractmethod
    async def step_deadlines(self, run_id: str) -> dict[str, int]:
        """When each of the run's sleeping or waiting steps is due, by step hash."""

    @abc.abstractmethod
    async def function_run_counts(self, since: int) -> dict[str, dict[str, int]]:
        """Runs queued since `since`, counted by function and status."""

    @abc.abstractmethod
    async def record_heartbeat(
        self, process_id: str, kind: str, app_ids: Sequence[str], now: int
    ) -> None:
        """Records that the process is alive now (the first call also sets its start), and
        forgets processes not seen for a day. Idempotent but for the time."""

    @abc.abstractmethod
    async def list_processes(self, seen_after: int) -> list[ProcessRecord]:
        """Processes whose last heartbeat is at or after `seen_after`."""

    @abc.abstractmethod
    async def queue_depths(self) -> QueueDepths:
        """Queued step jobs per app, and events not processed yet, counted now."""

    async def heartbeat(self, process_id: str, kind: str, app_ids: Sequence[str]) -> None:
        """Records the process every few seconds until cancelled: a process's one line to be
        seen on the dashboard."""
        await _heartbeat.beat(self, process_id, kind, app_ids)

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
