"""Names of the events the engine emits about runs and cron ticks."""

from __future__ import annotations

FAILED_EVENT = "tideflow/function.failed"
FINISHED_EVENT = "tideflow/function.finished"
CANCELLED_EVENT = "tideflow/function.cancelled"
INVOKED_EVENT = "tideflow/function.invoked"
CRON_EVENT = "tideflow/scheduled.timer"
RUN_EVENT_PREFIX = "tideflow/function."
