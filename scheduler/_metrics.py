from __future__ import annotations

import prometheus_client

EVENTS = prometheus_client.Counter("tideflow_scheduler_events_total", "Events processed.")
RUNS_FINISHED = prometheus_client.Counter(
    "tideflow_scheduler_runs_finished_total", "Runs ended, by status.", ["status"]
)
TIMERS = prometheus_client.Counter(
    "tideflow_scheduler_timers_fired_total", "Timers fired, by kind.", ["kind"]
)
REDISPATCHED = prometheus_client.Counter(
    "tideflow_scheduler_jobs_redispatched_total",
    "Jobs published again by the sweeper (lease lapsed or message lost).",
)
