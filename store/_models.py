"""The records the store keeps, and the changes the scheduler asks it to make atomically."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

from tideflow._core import protocol
from tideflow._core.protocol import ErrorInfo

if TYPE_CHECKING:
    from ._gates import Gate

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = (
    "Queued",
    "Running",
    "Completed",
    "Failed",
    "Cancelled",
)
TERMINAL = (COMPLETED, FAILED, CANCELLED)
STEP_RUNNING, STEP_WAITING = "Running", "Waiting"
JOB_PENDING = "pending"

WAIT_EVENT, WAIT_SIGNAL, WAIT_INVOKE = "event", "signal", "invoke"
WAIT_OFFLOAD = "offload"
"""An offloaded step (fetch, ai.infer) waiting for its request's result."""
WAIT_CANCEL = "cancel"
"""A run's cancel listener (`cancel=[Cancel(...)]`): a wait whose match cancels the run."""
TIMER_SLEEP, TIMER_WAIT, TIMER_RETRY, TIMER_CRON = "sleep", "wait", "retry", "cron"
TIMER_START = "start"
TIMER_TIMEOUT = "timeout"
"""A run's start or finish deadline (`step_hash` "start" or "finish")."""
"""A run held before its first step (a throttle): its first job is made when it fires."""
TIMER_DEBOUNCE, TIMER_BATCH = "debounce", "batch"
"""Hold timers: `run_id` carries the function id and `step_hash` the key value."""
TIMER_CANCEL, TIMER_BULK_CANCEL = "cancel", "bulk_cancel"
"""Cancellations asked through the API, due at once: `run_id` names the run to cancel, or, for
a bulk cancellation's next batch, carries the cancellation's id."""


@dataclasses.dataclass
class EventRecord:
    internal_id: str
    name: str
    data: Any
    ts: int
    received_at: int
    id: str | None = None
    user: Any = None
    v: str | None = None
    target: dict[str, Any] | None = None
    """Set for events addressed to one function (invoke, cron): `{"function_id", "parent"}`."""

    def to_api(self) -> dict[str, Any]:
        return {
            "internal_id": self.internal_id,
            "id": self.id,
            "name": self.name,
            "data": self.data,
            "ts": self.ts,
            "user": self.user,
            "v": self.v,
        }

    @classmethod
    def from_wire(cls, record: dict[str, Any], received_at: int) -> EventRecord:
        """An event sent by the engine's own producers (validated, with its `internal_id`)."""
        return cls(
            internal_id=record["internal_id"],
            id=record.get("id"),
            name=record["name"],
            data=record.get("data") or {},
            ts=record.get("ts") or received_at,
            user=record.get("user"),
            v=record.get("v"),
            received_at=received_at,
        )

    @classmethod
    def about_run(cls, name: str, run: RunRecord, now: int, **extra: Any) -> EventRecord:
        """A `tideflow/function.*` event about `run`, once per (run, name)."""
        from tideflow._core.ids import derived_id

        data = {
            "function_id": run.function_id,
            "run_id": run.run_id,
            "event": run.events[0],
            **extra,
        }
        return cls(
            internal_id=derived_id(run.run_id, name), name=name, data=data, ts=now, received_at=now
        )

    @classmethod
    def targeted(
        cls,
        name: str,
        data: Any,
        *,
        internal_id: str,
        function_id: str,
        now: int,
        parent: dict[str, Any] | None = None,
        ts: int | None = None,
    ) -> EventRecord:
        """An event addressed to one function (an invocation, a cron tick)."""
        return cls(
            internal_id=internal_id,
            name=name,
            data=data,
            ts=now if ts is None else ts,
            received_at=now,
            target={"function_id": function_id, "parent": parent},
        )

    def wire(self) -> dict[str, Any]:
        """The event as published to the events exchange (its `id` only if the sender gave
        one: it is the deduplication key)."""
        record: dict[str, Any] = {"internal_id": self.internal_id, **self.payload(), "id": self.id}
        if self.target is not None:
            record["target"] = self.target
        return record

    def payload(self) -> dict[str, Any]:
        """The event as a handler and an expression see it: its `id` is the sender's, or else
        the engine's own (the one `POST /e` answered)."""
        return {
            "name": self.name,
            "data": self.data,
            "id": self.id or self.internal_id,
            "ts": self.ts,
            "user": self.user,
            "v": self.v,
        }


@dataclasses.dataclass
class RunRecord:
    run_id: str
    function_id: str
    app_id: str
    event_id: str
    status: str
    events: list[dict[str, Any]]
    queued_at: int
    output: Any = None
    error: ErrorInfo | None = None
    started_at: int | None = None
    ended_at: int | None = None
    attempt: int = 0
    parent: dict[str, Any] | None = None

    def to_api(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "function_id": self.function_id,
            "event_id": self.event_id,
            "status": self.status,
            "output": self.output,
            "error": None if self.error is None else self.error.to_dict(),
            "run_started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
        }


@dataclasses.dataclass
class StepRecord:
    hash: str
    name: str
    op: str
    status: str
    attempt: int = 0
    output: Any = None
    error: ErrorInfo | None = None
    started_at: int | None = None
    ended_at: int | None = None
    input: Any = None
    """What the step was asked to do, as recorded (an offloaded request without its secrets,
    `ai.wrap`'s arguments); None for other steps."""

    def to_api(self) -> dict[str, Any]:
        return {
            "id": self.hash,
            "name": self.name,
            "op": self.op,
            "status": self.status,
            "attempt": self.attempt,
            "output": self.output,
            "error": None if self.error is None else self.error.to_dict(),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(self.ended_at),
            "input": self.input,
            "ai": self.ai_summary(),
        }

    def ai_summary(self) -> dict[str, Any] | None:
        """For an `ai.infer` step: `{"model", "prompt", "usage"}` (usage: `prompt_tokens`,
        `completion_tokens`, once the provider has answered); None for other steps."""
        if self.op != protocol.OP_AI_INFER or not isinstance(self.input, dict):
            return None
        body = self.input.get("body")
        prompt = body.get("messages") if isinstance(body, dict) else None
        return {"model": self.input.get("model"), "prompt": prompt, "usage": _usage(self.output)}


@dataclasses.dataclass(frozen=True)
class JobRecord:
    job_id: str
    run_id: str
    function_id: str
    app_id: str
    attempt: int = 0


@dataclasses.dataclass
class RunState:
    """What a worker needs to replay a run: the run, its stored steps, and the job it holds."""

    run: RunRecord
    steps: dict[str, StepRecord]
    job: JobRecord


@dataclasses.dataclass
class JobFinish:
    """What a worker writes when a job ends: the steps it ran, the events they sent, and
    the job's outcome, as of `now`."""

    job_id: str
    steps: list[StepRecord]
    events: list[EventRecord]
    outcome: protocol.Outcome
    now: int


@dataclasses.dataclass
class JobOutcome:
    job: JobRecord
    run: RunRecord
    outcome: protocol.Outcome


@dataclasses.dataclass
class WaitRecord:
    run_id: str
    step_hash: str
    kind: str
    event_name: str | None = None
    if_exp: str | None = None
    signal: str | None = None
    run_event: dict[str, Any] | None = None
    """The waiting run's triggering event, which `if_exp` sees as `event`."""
    match_path: str | None = None
    match_key: str | None = None
    """Where `if_exp` is an `event.x == async.y` equality (`tideflow._core.matching`): the
    async path, and the key of the run's value, that the wait is looked up by."""
    expires_at: int | None = None
    """A cancel listener's end (its timeout): it no longer matches from then."""
    run: RunRecord | None = None
    """For a candidate found for an incoming event: its run (read, not locked)."""


@dataclasses.dataclass(frozen=True)
class Listener:
    """A cancel listener registered with its run: `wait` (kind WAIT_CANCEL), listening for
    `timeout_ms` from the run's creation (None: until the run ends)."""

    wait: WaitRecord
    timeout_ms: int | None = None


@dataclasses.dataclass
class CancellationRecord:
    """A bulk cancellation: the live runs of a function queued in [started_after,
    started_before) whose event matches `if_exp`, worked through in (queued_at, run_id) order;
    `cursor_*` is the last run it has looked at."""

    cancellation_id: str
    function_id: str
    started_after: int
    started_before: int
    if_exp: str | None
    created_at: int
    status: str = RUNNING
    cancelled: int = 0
    cursor_at: int = 0
    cursor_id: str = ""


@dataclasses.dataclass
class TimerRecord:
    timer_id: str
    kind: str
    run_id: str
    step_hash: str
    due_at: int
    payload: dict[str, Any] = dataclasses.field(default_factory=dict)


# Changes, applied in order inside one transaction by `Store.apply`.


@dataclasses.dataclass(frozen=True)
class Slot:
    """A concurrency pool a run's steps draw from: its key, and the limit this run obeys."""

    key: str
    limit: int


@dataclasses.dataclass(frozen=True)
class PendingJob:
    """A job waiting for admission: its place in line and the slots it needs."""

    job_id: str
    order_at: int
    slots: tuple[Slot, ...]


@dataclasses.dataclass
class CreateRun:
    """Creates a run and its first job, once per (event, function).

    With `slots`, the run's jobs are created pending and wait for admission in line order:
    queued time moved `priority_ms` earlier.
    """

    run_id: str
    function_id: str
    app_id: str
    event_id: str
    events: list[dict[str, Any]]
    parent: dict[str, Any] | None = None
    slots: tuple[Slot, ...] = ()
    priority_ms: int = 0
    gates: tuple[Gate, ...] = ()
    """Flow-control rules that decide, in the transaction that applies this, whether the run
    starts (rate limit, idempotency, singleton; in that order) and when (throttle)."""
    start_at: int | None = None
    """Set by a throttle: the run is created now, its first job at this time (a timer)."""
    start_timeout_ms: int | None = None
    """Cancel the run if its first step has not started this long after it was created."""
    finish_timeout_ms: int | None = None
    """Cancel the run if it has not ended this long after its first step started."""
    listeners: tuple[Listener, ...] = ()
    """Cancel listeners, registered in the transaction that creates the run."""


@dataclasses.dataclass
class ResolveStep:
    """Records a waiting step's result and dispatches its run again.

    With `require_wait`, only if the step's wait is still there (it is removed), so that one
    wait is resolved once.
    """

    run_id: str
    step_hash: str
    output: Any = None
    error: ErrorInfo | None = None
    require_wait: bool = True


@dataclasses.dataclass
class AddWait:
    """Records a step as Waiting, with its wait (if any) and its timer (if any); a no-op when the
    step already has a row."""

    step: StepRecord
    run_id: str
    wait: WaitRecord | None = None
    timer: TimerRecord | None = None
    events: list[EventRecord] = dataclasses.field(default_factory=list)
    """Stored only when the step is new (an invocation's event)."""
    offload: protocol.OffloadJob | None = None
    """For an offloaded step (fetch, ai.infer): the request to publish once the step waits. The
    step may exist already, Running after a failed attempt; it is made Waiting again."""


@dataclasses.dataclass
class ScheduleRetry:
    """Records a failed attempt of a step (or of the run, with no step) and its retry timer."""

    run_id: str
    timer: TimerRecord
    step: StepRecord | None = None
    run_attempt: int | None = None
    require_wait: bool = False
    """Only if the step's wait is still there (it is removed, with the step's timers): an
    offloaded step's failed attempt, which ends its wait once."""


@dataclasses.dataclass
class Dispatch:
    run_id: str
    attempt: int = 0


@dataclasses.dataclass
class FinishRun:
    """Ends a run (unless it already ended), drops its waits and timers, and resolves the step
    of a parent run that invoked it."""

    run_id: str
    status: str
    output: Any = None
    error: ErrorInfo | None = None
    parent_run_id: str | None = None
    """The run that invoked this one, if any: its step is resolved too (and its row locked)."""


@dataclasses.dataclass
class AddEvents:
    """Stores events to be processed (system events, cron ticks, invocations)."""

    events: list[EventRecord]
    quiet: bool = False
    """No function triggers on these: stored as processed, unless a run waits for one."""


@dataclasses.dataclass
class AddTimer:
    timer: TimerRecord


# Holds: events kept before their run exists (debounce, batching), per function and key value.


@dataclasses.dataclass(frozen=True)
class Burst:
    """A debounced burst: its latest event (the one its run will get), when its first event
    came, when its run is due."""

    event_id: str
    first_at: int
    due_at: int


@dataclasses.dataclass(frozen=True)
class OpenBatch:
    """A batch being filled: its first event (the run's `event_id`), how many events it holds,
    when it opened, when its run is due even if not full."""

    event_id: str
    size: int
    first_at: int
    due_at: int


class DebounceRule(Protocol):
    def on_event(self, burst: Burst | None, event_id: str, now: int) -> Burst:
        """The burst once `event_id` has arrived (None: no burst open)."""
        ...


class BatchRule(Protocol):
    def on_event(self, batch: OpenBatch | None, event_id: str, now: int) -> OpenBatch:
        """The batch once `event_id` is added to it (None: no batch open)."""
        ...

    def is_full(self, batch: OpenBatch) -> bool: ...


class RunStarter(Protocol):
    def __call__(self, event_id: str, events: list[dict[str, Any]]) -> CreateRun:
        """The run a hold starts with `events`, listed under (and keyed by) `event_id`."""
        ...


@dataclasses.dataclass
class HoldDebounced:
    """Makes `event_id` the latest event of its key's burst; `rule` (decided from the burst
    read and locked in the same transaction) moves the burst's timer."""

    function_id: str
    key: str
    event_id: str
    rule: DebounceRule
    start: RunStarter
    gates: tuple[Gate, ...] = ()
    """Gates the event passes before it is held (rate limit, idempotency)."""


@dataclasses.dataclass
class AddToBatch:
    """Adds `event_id` to its key's open batch; a batch that `rule` finds full starts its run
    (made by `start`)."""

    function_id: str
    key: str
    event_id: str
    rule: BatchRule
    start: RunStarter
    gates: tuple[Gate, ...] = ()
    """Gates the event passes before it is held (rate limit, idempotency)."""


@dataclasses.dataclass
class StartHeld:
    """A hold timer fired: starts the run of the key's burst or batch (made by `start`) if it
    is due, else re-arms the timer at its due time; nothing if it has started already."""

    kind: str
    """TIMER_DEBOUNCE or TIMER_BATCH."""
    function_id: str
    key: str
    start: RunStarter


HOLDS = (HoldDebounced, AddToBatch, StartHeld)

Change = (
    CreateRun
    | ResolveStep
    | AddWait
    | ScheduleRetry
    | Dispatch
    | FinishRun
    | AddEvents
    | AddTimer
    | HoldDebounced
    | AddToBatch
    | StartHeld
)


THROTTLED, DEBOUNCED, BATCHED = "throttled", "debounced", "batched"


@dataclasses.dataclass(frozen=True)
class FlowEffect:
    """What a flow-control rule did to one event of a function, for the scheduler's metrics:
    started no run (a gate refusal's reason), delayed its run (THROTTLED) or held it
    (DEBOUNCED, BATCHED)."""

    function_id: str
    effect: str


@dataclasses.dataclass(frozen=True)
class RunRef:
    """Which run, of which function and app: what a cancel notice and a metric need."""

    run_id: str
    function_id: str
    app_id: str


@dataclasses.dataclass
class Applied:
    """What a committed change set asks to be published."""

    jobs: list[JobRecord] = dataclasses.field(default_factory=list)
    events: list[EventRecord] = dataclasses.field(default_factory=list)
    cancelled: list[RunRef] = dataclasses.field(default_factory=list)
    """Runs cancelled (by any cause): their workers are told to stop starting steps."""
    admission_keys: set[str] = dataclasses.field(default_factory=set)
    """Concurrency pools with a job created pending or a slot freed: admit into them."""
    done: bool = True
    """False when the guard refused it: already applied elsewhere, or no longer valid."""
    flow: list[FlowEffect] = dataclasses.field(default_factory=list)
    """What flow control did to the events applied (counted, never published)."""
    offloads: list[protocol.OffloadJob] = dataclasses.field(default_factory=list)
    """Offloaded requests of steps that now wait for them."""

    def extend(self, other: Applied) -> None:
        self.jobs.extend(other.jobs)
        self.offloads.extend(other.offloads)
        self.events.extend(other.events)
        self.cancelled.extend(other.cancelled)
        self.admission_keys |= other.admission_keys
        self.flow.extend(other.flow)


def _usage(response: Any) -> dict[str, int] | None:
    # OpenAI-compatible answers count prompt/completion tokens, Anthropic's input/output ones.
    usage = response.get("usage") if isinstance(response, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return {"prompt_tokens": prompt, "completion_tokens": completion}


def _iso(ms: int | None) -> str | None:
    import datetime

    if ms is None:
        return None
    moment = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
