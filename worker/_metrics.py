from __future__ import annotations

import prometheus_client

JOBS = prometheus_client.Counter(
    "tideflow_worker_jobs_total", "Step jobs run, by outcome kind.", ["outcome"]
)
STEPS = prometheus_client.Counter(
    "tideflow_worker_steps_total", "Steps executed, by status.", ["status"]
)
JOB_SECONDS = prometheus_client.Histogram(
    "tideflow_worker_job_seconds", "Time to run one step job."
)
