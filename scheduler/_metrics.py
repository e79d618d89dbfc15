"""The scheduler's Prometheus metrics. Labels are bounded: a registered function's id, a run
status, a timer kind, a queue of the fixed topology or an app's work queue. Never a run, an
event or a key."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import prometheus_client
from tideflow.broker import Broker, topology
from tideflow.broker._depth import ready_messages
from tideflow.broker._metrics import QUEUE_MESSAGES
from tideflow.store import models as m

logger = logging.getLogger(__name__)
QUEUE_SAMPLE_S = 5.0

EVENTS = prometheus_client.Counter("tideflow_scheduler_events_total", "Events processed.")
TIMERS = prometheus_client.Counter(
    "tideflow_scheduler_timers_fired_total", "Timers fired, by kind.", ["kind"]
)
TIMER_LATENESS = prometheus_client.Histogram(
    "tideflow_scheduler_timer_lateness_seconds",
    "How long after its due time a timer fired, by kind.",
    ["kind"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, float("inf")),
)
REDISPATCHED = prometheus_client.Counter(
    "tideflow_scheduler_jobs_redispatched_total",
    "Jobs published again by the sweeper (lease lapsed or message lost).",
)
ADMITTED = prometheus_client.Counter(
    "tideflow_scheduler_jobs_admitted_total",
    "Step jobs admitted into their concurrency pools (jobs of unlimited functions skip this).",
)
RETRIES = prometheus_client.Counter(
    "tideflow_step_retries_total",
    "Failed attempts scheduled to run again (a step's or a run's), by function.",
    ["function"],
)


def count_retries(function_id: str, changes: Iterable[m.Change]) -> None:
    retries = sum(isinstance(change, m.ScheduleRetry) for change in changes)
    if retries:
        RETRIES.labels(function_id).inc(retries)


def observe_timer(timer: m.TimerRecord, now_ms: int) -> None:
    TIMERS.labels(timer.kind).inc()
    TIMER_LATENESS.labels(timer.kind).observe(max(0, now_ms - timer.due_at) / 1000)


async def sample_queues(broker: Broker, apps: Callable[[], Iterable[str]]) -> None:
    """Samples, every few seconds, the scheduler's backlog (its two queues) and the depth of
    each app's work queue (`apps()` names the apps the scheduler knows)."""
    while True:
        await asyncio.sleep(QUEUE_SAMPLE_S)
        queues = [topology.SCHEDULER_EVENTS_QUEUE, topology.SCHEDULER_OUTCOMES_QUEUE]
        queues += sorted({topology.jobs_queue(app_id) for app_id in apps()})
        try:
            for queue, depth in (await ready_messages(broker, queues)).items():
                QUEUE_MESSAGES.labels(queue).set(depth)
        except Exception:  # a metric must never stop the scheduler
            logger.exception("sampling queue depths failed")
