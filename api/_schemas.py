"""The bodies and answers of the HTTP API as pydantic models, for its OpenAPI document.

They describe what the handlers build; they are documentation, not serialisers: the handlers
keep producing their dicts, and the schemathesis test checks that what they produce conforms.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

import pydantic
from tideflow import _event as ev


class Problem(pydantic.BaseModel):
    """An error answer."""

    error: str = pydantic.Field(description="What is wrong, for a person to read.")
    status: int | None = pydantic.Field(None, description="The HTTP status, repeated.")


class ErrorInfo(pydantic.BaseModel):
    """A run's or a step's error."""

    name: str
    message: str
    stack: str | None = None


RunStatus = Literal["Queued", "Running", "Completed", "Failed", "Cancelled"]


class Run(pydantic.BaseModel):
    run_id: str
    function_id: str = pydantic.Field(description="`<app_id>-<fn_id>`")
    event_id: str
    status: RunStatus
    output: Any = None
    error: ErrorInfo | None
    run_started_at: str | None = pydantic.Field(description="RFC 3339, UTC")
    ended_at: str | None


class Hold(pydantic.BaseModel):
    """Why a run is held now: `since` a concurrency wait began, `until` a throttle's delay."""

    rule: str
    since: str | None = None
    until: str | None = None


class HeldRun(Run):
    held: Hold | None


class Step(pydantic.BaseModel):
    id: str
    name: str = pydantic.Field(description="The user's step id.")
    op: Literal[
        "run",
        "sleep",
        "wait_for_event",
        "wait_for_signal",
        "invoke",
        "send_event",
        "fetch",
        "ai_infer",
        "ai_wrap",
    ]
    status: Literal["Running", "Waiting", "Completed", "Failed"]
    attempt: int
    output: Any = None
    error: ErrorInfo | None
    started_at: str | None
    ended_at: str | None
    deadline: str | None = pydantic.Field(description="When a sleep or wait in progress is due.")


class EventIn(pydantic.BaseModel):
    """An event as sent. `id` is a deduplication key (24 h); `ts` is ms since the epoch."""

    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(min_length=1)
    data: dict[str, Any] = pydantic.Field(default_factory=dict)
    id: str | None = None
    ts: int | None = pydantic.Field(None, ge=0, le=ev.MAX_TS)
    user: Any = None
    v: str | None = None


class Event(pydantic.BaseModel):
    internal_id: str = pydantic.Field(description="The engine's id (what `POST /e` answered).")
    id: str | None
    name: str
    data: Any
    ts: int
    user: Any
    v: str | None


class EventSummary(Event):
    received_at: str | None
    status: Literal["pending", "duplicate", "started", "no function matched"]
    run_ids: list[str]


class NotStarted(pydantic.BaseModel):
    function_id: str
    reason: str
    run_id: str | None


class EventDetail(EventSummary):
    not_started: list[NotStarted]


class Ids(pydantic.BaseModel):
    ids: list[str]
    status: Literal[200]


class RunId(pydantic.BaseModel):
    run_id: str


class RunAnswer(pydantic.BaseModel):
    data: Run


class HeldRunAnswer(pydantic.BaseModel):
    data: HeldRun


class RunList(pydantic.BaseModel):
    data: list[Run]


class RunPage(pydantic.BaseModel):
    data: list[Run]
    cursor: str | None


class StepList(pydantic.BaseModel):
    data: list[Step]


class EventList(pydantic.BaseModel):
    data: list[EventSummary]


class EventAnswer(pydantic.BaseModel):
    data: EventDetail


class Function(pydantic.BaseModel):
    function_id: str
    app_id: str
    name: str
    triggers: list[Any]
    config: dict[str, Any]
    runs_24h: dict[str, int] = pydantic.Field(description="Runs in the last 24 h, by status.")


class FunctionList(pydantic.BaseModel):
    data: list[Function]


class RunConflict(pydantic.BaseModel):
    """The run has already ended (409), or its cancellation is asked for but not done (202)."""

    error: str
    data: Run


class Signal(pydantic.BaseModel):
    signal: str = pydantic.Field(min_length=1)
    data: Any = None


class Invoke(pydantic.BaseModel):
    data: dict[str, Any] = pydantic.Field(default_factory=dict)


class CancellationRequest(pydantic.BaseModel):
    function_id: str = pydantic.Field(min_length=1)
    started_after: datetime.datetime = pydantic.Field(description="RFC 3339, with its offset")
    started_before: datetime.datetime = pydantic.Field(description="RFC 3339, with its offset")
    if_exp: str | None = pydantic.Field(None, description="A CEL expression over `event`.")


class CancellationId(pydantic.BaseModel):
    id: str


class Cancellation(pydantic.BaseModel):
    id: str
    status: Literal["Running", "Completed"]
    cancelled: int
    function_id: str
    started_after: str | None
    started_before: str | None
    if_exp: str | None
    created_at: str | None


class CancellationAnswer(pydantic.BaseModel):
    data: Cancellation


class Process(pydantic.BaseModel):
    process_id: str
    kind: str
    app_ids: list[str]
    started_at: str | None
    last_seen_at: str | None
    heartbeat_age_s: float


class ProcessList(pydantic.BaseModel):
    data: list[Process]


class Depths(pydantic.BaseModel):
    jobs_queued: dict[str, int]
    events_unprocessed: int


class QueueAnswer(pydantic.BaseModel):
    data: Depths


class Health(pydantic.BaseModel):
    database: bool
    broker: bool


class RealtimeMessage(pydantic.BaseModel):
    channel: str
    topic: str
    data: Any
    run_id: str | None
    created_at: str | int | None


class Accepted(pydantic.BaseModel):
    status: Literal[202]
