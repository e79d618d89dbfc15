"""DBOS Transact: a 1-step and a 10-step workflow enqueued on a DBOS queue, PostgreSQL as its
system database; the workers are one `dbos_app.py` process, the bench enqueues with a
`DBOSClient`, a batch of workflows a transaction."""

from __future__ import annotations

import contextlib
import itertools
import sys
from typing import Any

from _harness import BENCH_DIR, now_ms, paced, pg_url, recreate_database, wait_until
from _system import Options, System
from dbos_app import ONE_WORKFLOW, QUEUE, TEN_WORKFLOW

WORKFLOWS = {"one": ONE_WORKFLOW, "ten": TEN_WORKFLOW}


class DbosSystem(System):
    name = "dbos"
    own_code = ("dbos/",)

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self.concurrency = options.concurrency
        self.polling = options.dbos_polling_s
        self.description = (
            f"DBOS Transact, one worker process, queue worker_concurrency {self.concurrency}, "
            f"polling every {self.polling * 1000:.0f} ms"
        )
        self.sent: dict[str, float] = {}
        self.client: Any = None
        self.engine: Any = None

    def start(self) -> None:
        import sqlalchemy
        from dbos import DBOSClient

        recreate_database(self.database)
        url = pg_url(self.database)
        self.config = {
            "worker_concurrency": self.concurrency,
            "polling_interval_sec": self.polling,
            "processes": 1,
            "enqueue": "DBOSClient.enqueue_in_transaction, 100 a transaction",
        }
        worker = self.procs.start(
            "worker",
            [sys.executable, str(BENCH_DIR / "dbos_app.py")],
            {
                "BENCH_DBOS_URL": url,
                "BENCH_DBOS_CONCURRENCY": str(self.concurrency),
                "BENCH_DBOS_POLLING_S": str(self.polling),
            },
        )
        wait_until("dbos worker", lambda: "ready" in worker.tail(5), 120, self.procs)
        self.client = DBOSClient(system_database_url=url, application_name="bench")
        self.engine = sqlalchemy.create_engine(
            pg_url(self.database, "postgresql+psycopg"), pool_size=2
        )

    def cleanup(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.destroy()
        if self.engine is not None:
            self.engine.dispose()

    def send(self, workload: str, phase: str, count: int, rate: float | None) -> None:
        workflow = WORKFLOWS[workload]
        for indices in paced(count, rate, 100):
            with self.engine.begin() as conn:
                for i in indices:
                    workflow_id = f"{phase}-{i}"
                    self.sent[workflow_id] = now_ms()
                    self.client.enqueue_in_transaction(
                        conn,
                        {
                            "queue_name": QUEUE,
                            "workflow_name": workflow,
                            "workflow_id": workflow_id,
                        },
                    )

    def completed(self, workload: str) -> int:
        return int(
            self.db.one(
                "SELECT count(*) FROM dbos.workflow_status WHERE name = %s AND status = 'SUCCESS'",
                (WORKFLOWS[workload],),
            )
        )

    def latencies(self, workload: str, phase: str) -> dict[str, list[float]]:
        runs = self.db.all(
            "SELECT workflow_uuid, created_at, completed_at FROM dbos.workflow_status "
            "WHERE workflow_uuid LIKE %s AND status = 'SUCCESS'",
            (f"{phase}-%",),
        )
        steps = self.db.all(
            "SELECT o.workflow_uuid, o.started_at_epoch_ms, o.completed_at_epoch_ms "
            "FROM dbos.operation_outputs o WHERE o.workflow_uuid LIKE %s "
            "ORDER BY o.workflow_uuid, o.function_id",
            (f"{phase}-%",),
        )
        by_run: dict[str, list[tuple[int, int]]] = {}
        for run_id, started, ended in steps:
            by_run.setdefault(run_id, []).append((started, ended))
        queued: list[float] = []
        sched: list[float] = []
        e2e: list[float] = []
        for run_id, created, completed in runs:
            run_steps = by_run.get(run_id)
            if not run_steps:
                continue
            queued.append(float(run_steps[0][0] - created))
            sched += [float(b[0] - a[1]) for a, b in itertools.pairwise(run_steps)]
            if completed is not None and run_id in self.sent:
                e2e.append(float(completed) - self.sent[run_id])
        result = {"queued": queued, "e2e": e2e}
        if sched:
            result["sched"] = sched
        return result
