"""tideflow: durable functions made of steps, triggered by events."""

from __future__ import annotations

from . import encryption, errors, realtime
from ._checkpointing import Checkpointing
from ._client import Client
from ._context import Context, Group, Step, SyncContext, SyncGroup, SyncStep
from ._dependencies import Dependencies
from ._event import Event
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
from ._triggers import TriggerCron, TriggerEvent
from .errors import NonRetriableError, RetryAfterError, StepError, StepTimeout, TideflowError

__all__ = [
    "Checkpointing",
    "Client",
    "Context",
    "Dependencies",
    "Event",
    "Function",
    "Group",
    "Middleware",
    "MiddlewareSync",
    "NonRetriableError",
    "RawRequest",
    "RetryAfterError",
    "SendEventsResult",
    "Settings",
    "Step",
    "StepError",
    "StepInfo",
    "StepTimeout",
    "SyncContext",
    "SyncGroup",
    "SyncStep",
    "TideflowError",
    "TransformOutputResult",
    "TriggerCron",
    "TriggerEvent",
    "encryption",
    "errors",
    "realtime",
]
