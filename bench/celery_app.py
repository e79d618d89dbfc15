"""The Celery app of the benchmark: `celery -A celery_app worker`, broker and result backend
from BENCH_CELERY_BROKER and BENCH_CELERY_BACKEND."""

from __future__ import annotations

import os
import time

from celery import Celery

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    backend=os.environ.get("BENCH_CELERY_BACKEND"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="bench",
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=int(os.environ.get("BENCH_CELERY_PREFETCH", "4")),
    worker_hijack_root_logger=False,
    result_extended=False,
    database_short_lived_sessions=False,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(*args: object) -> float:
    """Does nothing; returns when it started (epoch ms), which the bench reads back from the
    result table to measure queueing."""
    return time.time() * 1000.0
