"""The worker's Prometheus metrics. Labels are bounded: a registered function's id, a step op
(run, sleep, wait, invoke, ...), a step status or an outcome kind. Never a run, an event or a
key."""

from __future__ import annotations

from collections.abc import Iterable

import prometheus_client
from tideflow.store import models as m

# Steps run from milliseconds (a lookup) to many minutes (a model, a report).
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)

JOBS = prometheus_client.Counter(
    "tideflow_worker_jobs_total", "Step jobs run, by outcome kind.", ["outcome"]
)
STEPS = prometheus_client.Counter(
    "tideflow_worker_steps_total", "Steps executed, by status.", ["status"]
)
JOB_SECONDS = prometheus_client.Histogram(
    "tideflow_worker_job_seconds", "Time to run one step job.", buckets=_SECONDS
)
JOBS_IN_FLIGHT = prometheus_client.Gauge(
    "tideflow_worker_jobs_in_flight", "Step jobs this worker is running now."
)
STEP_SECONDS = prometheus_client.Histogram(
    "tideflow_step_duration_seconds",
    "Time a step took to run (its body, or the op's bookkeeping), by function and op.",
    ["function", "op"],
    buckets=_SECONDS,
)
RUNS_STARTED = prometheus_client.Counter(
    "tideflow_runs_started_total", "Runs whose first step job started, by function.", ["function"]
)
QUEUED_SECONDS = prometheus_client.Histogram(
    "tideflow_run_queued_seconds",
    "From a run being queued (its event accepted) to its first step job starting, by function.",
    ["function"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
OFFLOADED = prometheus_client.Counter(
    "tideflow_worker_offloaded_requests_total",
    "Offloaded requests (fetch, ai_infer) this worker made, by op and result: ok (a response, "
    "a fetch's 4xx included), attempt_failed (a network error, a timeout, a 5xx: retried while "
    "the step has attempts) or refused (bad input, a host not allowed, a response too large).",
    ["op", "result"],
)
OFFLOADED_IN_FLIGHT = prometheus_client.Gauge(
    "tideflow_worker_offloaded_in_flight",
    "Offloaded requests this worker is making now (at most TIDEFLOW_FETCH_CONCURRENCY).",
)
LEASES_LOST = prometheus_client.Counter(
    "tideflow_worker_leases_lost_total",
    "Job leases that expired under this worker (its result is dropped; the job runs again).",
)


def job_started(state: m.RunState, now_ms: int) -> None:
    """Counts a run's start and its queued latency when this is its first job."""
    if state.steps:
        return
    RUNS_STARTED.labels(state.run.function_id).inc()
    QUEUED_SECONDS.labels(state.run.function_id).observe(
        max(0, now_ms - state.run.queued_at) / 1000
    )


def steps_done(function_id: str, steps: Iterable[m.StepRecord]) -> None:
    for step in steps:
        STEPS.labels(step.status).inc()
        if step.started_at is not None and step.ended_at is not None:
            STEP_SECONDS.labels(function_id, step.op).observe(
                max(0, step.ended_at - step.started_at) / 1000
            )
