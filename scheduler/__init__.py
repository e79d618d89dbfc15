"""The scheduler: every decision about whether and when something runs."""

from __future__ import annotations

from ._scheduler import Scheduler

__all__ = ["Scheduler"]
