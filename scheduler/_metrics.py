"""The scheduler's Prometheus metrics. Labels are bounded: a registered function's id, a run
status, a timer kind, a queue of the fixed topology or an app's work queue. Never a run, an
event or a key."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterable

import prometheus_client
from tideflow.broker import Broker, topology
from tideflow.broker._depth import ready_messages
from tideflow.broker._metrics import QUEUE_MESSAGES
from tideflow.store import Store
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
    "Step jobs admitted into their concurrency pools, by function (jobs of unlimited functions"
    " skip this).",
    ["function"],
)
PENDING = prometheus_client.Gauge(
    "tideflow_scheduler_jobs_pending",
    "Step jobs waiting for admission (a concurrency slot), by function; sampled.",
    ["function"],
)
SLOTS = prometheus_client.Gauge(
    "tideflow_scheduler_slots_in_use",
    "Concurrency slots held (step jobs admitted and not ended), by function with a limit; sampled.",
    ["function"],
)
REFUSED = prometheus_client.Counter(
    "tideflow_scheduler_events_refused_total",
    "Events that started no run of a function, by function and reason (rate_limited,"
    " idempotent, singleton).",
    ["function", "reason"],
)
THROTTLED = prometheus_client.Counter(
    "tideflow_scheduler_runs_throttled_total",
    "Runs whose start a throttle delayed, by function.",
    ["function"],
)
HELD = prometheus_client.Counter(
    "tideflow_scheduler_events_held_total",
    "Events held before their run exists, by function and rule (debounce, batch).",
    ["function", "rule"],
)
_HELD_RULES = {m.DEBOUNCED: "debounce", m.BATCHED: "batch"}
RETRIES = prometheus_client.Counter(
    "tideflow_step_retries_total",
    "Failed attempts scheduled to run again (a step's or a run's), by function.",
    ["function"],
)


def count_retries(function_id: str, changes: Iterable[m.Change]) -> None:
    retries = sum(isinstance(change, m.ScheduleRetry) for change in changes)
    if retries:
        RETRIES.labels(function_id).inc(retries)


def count_admitted(jobs: Iterable[m.JobRecord]) -> None:
    for function_id, count in Counter(job.function_id for job in jobs).items():
        ADMITTED.labels(function_id).inc(count)


def count_flow(effects: Iterable[m.FlowEffect]) -> None:
    """Counts what flow control did to a batch of events (see `m.Applied.flow`)."""
    for (function_id, effect), count in Counter((e.function_id, e.effect) for e in effects).items():
        if effect == m.THROTTLED:
            THROTTLED.labels(function_id).inc(count)
        elif effect in _HELD_RULES:
            HELD.labels(function_id, _HELD_RULES[effect]).inc(count)
        else:
            REFUSED.labels(function_id, effect).inc(count)


def observe_timer(timer: m.TimerRecord, now_ms: int) -> None:
    TIMERS.labels(timer.kind).inc()
    TIMER_LATENESS.labels(timer.kind).observe(max(0, now_ms - timer.due_at) / 1000)


async def sample_queues(
    broker: Broker,
    store: Store,
    apps: Callable[[], Iterable[str]],
    limited: Callable[[], Iterable[str]],
) -> None:
    """Samples, every few seconds, the scheduler's backlog (its two queues), the depth of
    each app's work queue (`apps()` names the apps the scheduler knows), the jobs waiting for
    admission per function, and the slots held per limited function (`limited()`)."""
    pending_seen: set[str] = set()
    while True:
        await asyncio.sleep(QUEUE_SAMPLE_S)
        queues = [topology.SCHEDULER_EVENTS_QUEUE, topology.SCHEDULER_OUTCOMES_QUEUE]
        queues += sorted({topology.jobs_queue(app_id) for app_id in apps()})
        try:
            for queue, depth in (await ready_messages(broker, queues)).items():
                QUEUE_MESSAGES.labels(queue).set(depth)
        except Exception:  # a metric must never stop the scheduler
            logger.exception("sampling queue depths failed")
        try:
            pending_seen = await _sample_pending(store, pending_seen)
            await sample_slots(store, limited())
        except Exception:  # a metric must never stop the scheduler
            logger.exception("sampling jobs pending admission failed")


async def sample_slots(store: Store, limited: Iterable[str]) -> None:
    """Sets the slots-in-use gauge of every function with a limit, to 0 when it holds none (a
    limited function always has the series)."""
    in_use = await store.slots_in_use_by_function()
    for function_id in set(limited) | in_use.keys():
        SLOTS.labels(function_id).set(in_use.get(function_id, 0))


async def _sample_pending(store: Store, seen: set[str]) -> set[str]:
    """Sets the pending gauge of every function with jobs waiting, and back to 0 for those
    that had some at the last sample and have none now; returns the functions set."""
    pending = await store.pending_jobs_by_function()
    for function_id in seen - pending.keys():
        PENDING.labels(function_id).set(0)
    for function_id, count in pending.items():
        PENDING.labels(function_id).set(count)
    return seen | pending.keys()
