"""Read models of the dashboard's queries: what the store answers about runs, events and the
processes it has seen, beside the records the engine itself works with."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class RunPage:
    """Where a page of runs (newest first) starts: strictly before this (queued_at, run_id)."""

    before_at: int
    before_id: str


@dataclasses.dataclass(frozen=True)
class EventState:
    """What became of an event: not processed yet, a duplicate, or the runs it started."""

    internal_id: str
    received_at: int
    processed: bool
    duplicate: bool
    run_ids: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    """A scheduler, worker or API process, as its last heartbeat described it."""

    process_id: str
    kind: str
    app_ids: tuple[str, ...]
    started_at: int
    seen_at: int


@dataclasses.dataclass(frozen=True)
class QueueDepths:
    """Work waiting: queued step jobs per app, and events accepted but not processed yet."""

    jobs_by_app: dict[str, int]
    unprocessed_events: int


@dataclasses.dataclass(frozen=True)
class Forgotten:
    """What one retention batch deleted: finished runs (with their steps, jobs, timers and
    waits) and events."""

    runs: int
    events: int


@dataclasses.dataclass(frozen=True)
class RunHold:
    """Why flow control holds a run now: its job waits for a concurrency slot (`rule`
    "concurrency", `at` when it began to wait) or its start timer is set (`rule` "throttle",
    `at` when it starts)."""

    rule: str
    at: int
