"""tideflow: durable functions made of steps, triggered by events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import ai, encryption, errors, realtime
from ._checkpointing import Checkpointing
from ._client import Client
from ._context import AiSteps, Context, Group, Step, SyncAiSteps, SyncContext, SyncGroup, SyncStep
from ._dependencies import Dependencies
from ._event import Event
from ._flow_control import (
    Batch,
    Cancel,
    Concurrency,
    Debounce,
    Priority,
    RateLimit,
    Singleton,
    Throttle,
    Timeouts,
)
from ._function import Function
from ._middleware import (
    Middleware,
    MiddlewareSync,
    RawRequest,
    SendEventsResult,
    StepInfo,
    TransformOutputResult,
)
from ._settings import Settings
from ._steps import StoredStep
from ._triggers import TriggerCron, TriggerEvent
from .errors import NonRetriableError, RetryAfterError, StepError, StepTimeout, TideflowError

# inngest-py's names, so that functions written for it move over with a changed import.
ContextSync = SyncContext
"""inngest-py's name for [`SyncContext`][tideflow.SyncContext]."""
StepSync = SyncStep
"""inngest-py's name for [`SyncStep`][tideflow.SyncStep]."""
StepMemos = Mapping[str, StoredStep]
"""inngest-py's name for the memoized steps `Middleware.transform_input` gets: step hash ->
[`StoredStep`][tideflow.StoredStep]."""
JSON = Any
"""inngest-py's name for a JSON-serialisable value (any value, to the type checker)."""

__all__ = [
    "JSON",
    "AiSteps",
    "Batch",
    "Cancel",
    "Checkpointing",
    "Client",
    "Concurrency",
    "Context",
    "ContextSync",
    "Debounce",
    "Dependencies",
    "Event",
    "Function",
    "Group",
    "Middleware",
    "MiddlewareSync",
    "NonRetriableError",
    "Priority",
    "RateLimit",
    "RawRequest",
    "RetryAfterError",
    "SendEventsResult",
    "Settings",
    "Singleton",
    "Step",
    "StepError",
    "StepInfo",
    "StepMemos",
    "StepSync",
    "StepTimeout",
    "StoredStep",
    "SyncAiSteps",
    "SyncContext",
    "SyncGroup",
    "SyncStep",
    "Throttle",
    "TideflowError",
    "Timeouts",
    "TransformOutputResult",
    "TriggerCron",
    "TriggerEvent",
    "ai",
    "encryption",
    "errors",
    "realtime",
]
