"""The step model as the worker hosts it: a handler pass over a run's stored steps, and the
middleware lifecycle around it."""

from __future__ import annotations

from tideflow._context import Context, SyncContext
from tideflow._event import Event, apply_schemas
from tideflow._function import Function
from tideflow._middleware import (
    Chain,
    Lifecycle,
    RawRequest,
    StepInfo,
    as_events,
    send_through,
    wire_records,
)
from tideflow._steps import (
    MAX_RUN_STATE_BYTES,
    MAX_STEP_OUTPUT_BYTES,
    Interrupt,
    Pass,
    PlannedOp,
    StoredStep,
    current_step_attempt,
)

__all__ = [
    "MAX_RUN_STATE_BYTES",
    "MAX_STEP_OUTPUT_BYTES",
    "Chain",
    "Context",
    "Event",
    "Function",
    "Interrupt",
    "Lifecycle",
    "Pass",
    "PlannedOp",
    "RawRequest",
    "StepInfo",
    "StoredStep",
    "SyncContext",
    "apply_schemas",
    "as_events",
    "current_step_attempt",
    "send_through",
    "wire_records",
]
