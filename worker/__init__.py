"""The worker: pulls step jobs, replays functions against their stored steps, runs the next."""

from __future__ import annotations

from ._checkpoint import Checkpointer
from ._executor import Execution
from ._worker import Worker

__all__ = ["Checkpointer", "Execution", "Worker"]
