"""The store: everything tideflow keeps (events, runs, steps, jobs, waits, timers)."""

from __future__ import annotations

from . import _gates as gates
from . import _heartbeat as heartbeat
from . import _metrics as metrics
from . import _models as models
from . import _views as views
from ._base import Store
from ._factory import create_store

__all__ = ["Store", "create_store", "gates", "heartbeat", "metrics", "models", "views"]
