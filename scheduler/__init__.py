"""The scheduler: every decision about whether and when something runs."""

from __future__ import annotations

from ._scheduler import Dispatcher, Scheduler

__all__ = ["Dispatcher", "Scheduler"]
