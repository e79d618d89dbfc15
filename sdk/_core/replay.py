"""The step model as the worker hosts it: a handler pass over a run's stored steps."""

from __future__ import annotations

from tideflow._context import Context, SyncContext
from tideflow._event import Event
from tideflow._function import Function
from tideflow._steps import (
    MAX_STEP_OUTPUT_BYTES,
    Interrupt,
    Pass,
    PlannedOp,
    StoredStep,
    current_step_attempt,
)

__all__ = [
    "MAX_STEP_OUTPUT_BYTES",
    "Context",
    "Event",
    "Function",
    "Interrupt",
    "Pass",
    "PlannedOp",
    "StoredStep",
    "SyncContext",
    "current_step_attempt",
]
