"""Celery on RabbitMQ, results in PostgreSQL (SQLAlchemy database backend): a 1-task job and a
chain of 10 tasks, every task a no-op."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from typing import Any

import psycopg
from _harness import (
    VENV_BIN,
    amqp_url,
    delete_vhost,
    now_ms,
    paced,
    pg_url,
    recreate_database,
    recreate_vhost,
    wait_until,
)
from _system import Options, System

TABLE = "celery_taskmeta"


class CelerySystem(System):
    name = "celery"
    own_code = ("celery/", "kombu/", "billiard/")

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self.pool = options.celery_pool
        self.concurrency = options.celery_concurrency or (
            options.concurrency if self.pool == "threads" else 2
        )
        self.description = (
            f"Celery, RabbitMQ broker, PostgreSQL results; --pool {self.pool} "
            f"--concurrency {self.concurrency}"
        )
        self.sent: dict[str, float] = {}
        self.app: Any = None
        self.noop: Any = None

    def start(self) -> None:
        recreate_database(self.database)
        recreate_vhost(self.vhost)
        env = {
            "BENCH_CELERY_BROKER": amqp_url(self.vhost),
            "BENCH_CELERY_BACKEND": "db+" + pg_url(self.database, "postgresql+psycopg"),
        }
        self.config = {
            "pool": self.pool,
            "concurrency": self.concurrency,
            "prefetch_multiplier": 4,
            "result_backend": "SQLAlchemy db+postgresql+psycopg",
            "worker_flags": "--without-gossip --without-mingle --without-heartbeat",
        }
        os.environ.update(env)
        import celery_app

        self.app = celery_app.app
        self.app.conf.broker_url = env["BENCH_CELERY_BROKER"]
        self.app.conf.result_backend = env["BENCH_CELERY_BACKEND"]
        self.noop = celery_app.noop
        self.procs.start(
            "worker",
            [
                str(VENV_BIN / "celery"),
                "-A",
                "celery_app",
                "worker",
                "--pool",
                self.pool,
                "--concurrency",
                str(self.concurrency),
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-Q",
                "bench",
                "-n",
                "bench@%h",
            ],
            env,
        )
        self.noop.apply_async(task_id="ready-0-last")
        wait_until("celery worker", lambda: self._count("ready-%-last") >= 1, 60, self.procs)

    def cleanup(self) -> None:
        if self.app is not None:
            with contextlib.suppress(Exception):
                self.app.close()
        delete_vhost(self.vhost)

    def send(self, workload: str, phase: str, count: int, rate: float | None) -> None:
        from celery import chain

        noop = self.noop
        with self.app.producer_or_acquire() as producer:
            for indices in paced(count, rate, 100):
                for i in indices:
                    prefix = f"{phase}-{i}"
                    self.sent[prefix] = now_ms()
                    if workload == "one":
                        noop.apply_async(task_id=f"{prefix}-last", producer=producer)
                    else:
                        links = [noop.s().set(task_id=f"{prefix}-s{k}") for k in range(9)]
                        links.append(noop.s().set(task_id=f"{prefix}-last"))
                        chain(*links).apply_async(producer=producer)

    def _count(self, pattern: str) -> int:
        try:
            return int(
                self.db.one(
                    f"SELECT count(*) FROM {TABLE} WHERE task_id LIKE %s AND status = 'SUCCESS'",
                    (pattern,),
                )
            )
        except psycopg.errors.UndefinedTable:
            return 0

    def completed(self, workload: str) -> int:
        return self._count(f"%{workload}-%-last")

    def latencies(self, workload: str, phase: str) -> dict[str, list[float]]:
        rows = self.db.all(
            f"SELECT task_id, result, extract(epoch FROM date_done) * 1000 FROM {TABLE} "
            "WHERE task_id LIKE %s AND status = 'SUCCESS'",
            (f"{phase}-%",),
        )
        # task id -> (started, done) in epoch ms; started is what the no-op task returned.
        tasks: dict[str, tuple[float, float]] = {}
        for task_id, result, done in rows:
            tasks[task_id] = (float(json.loads(bytes(result))), float(done))
        queued: list[float] = []
        sched: list[float] = []
        e2e: list[float] = []
        names = ["last"] if workload == "one" else [*(f"s{k}" for k in range(9)), "last"]
        for prefix, sent in self.sent.items():
            if not prefix.startswith(phase + "-"):
                continue
            chain_tasks = [tasks.get(f"{prefix}-{name}") for name in names]
            if any(task is None for task in chain_tasks):
                continue
            timed = [task for task in chain_tasks if task is not None]
            queued.append(timed[0][0] - sent)
            sched += [nxt[0] - prev[0] for prev, nxt in itertools.pairwise(timed)]
            e2e.append(timed[-1][1] - sent)
        result = {"queued": queued, "e2e": e2e}
        if sched:
            result["sched"] = sched
        return result
