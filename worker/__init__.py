"""The worker: pulls step jobs, replays functions against their stored steps, runs the next."""

from __future__ import annotations

from ._executor import Execution, JobResult
from ._worker import Worker

__all__ = ["Execution", "JobResult", "Worker"]
