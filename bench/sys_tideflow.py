"""tideflow in cluster mode: `tideflow migrate`, `api`, `scheduler` and `worker bench_app:client`
as separate processes on PostgreSQL and RabbitMQ; events published straight to the
`tideflow.events` exchange (or posted to `/e/{key}` in batches)."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Callable, Iterator

import httpx
from _harness import (
    VENV_BIN,
    amqp_consumers,
    amqp_url,
    delete_vhost,
    now_ms,
    paced,
    pg_url,
    recreate_database,
    recreate_vhost,
    scrape,
    wait_until,
)
from _system import Options, System
from bench_app import (
    BUFFERED_STEPS_VARIABLE,
    BURST,
    DEBOUNCE_EVENT,
    KEYED_EVENT,
    KEYS,
    LIMITED_EVENT,
    ONE_EVENT,
    SLEEP_EVENT,
    TEN_EVENT,
)

EVENTS = {
    "one": ONE_EVENT,
    "ten": TEN_EVENT,
    "keyed": KEYED_EVENT,
    "limited": LIMITED_EVENT,
    "debounce": DEBOUNCE_EVENT,
    "sleep": SLEEP_EVENT,
    "full": ONE_EVENT,
}
FUNCTIONS = {
    "one": "bench-one",
    "ten": "bench-ten",
    "keyed": "bench-keyed",
    "limited": "bench-limited",
    "debounce": "bench-debounce",
    "sleep": "bench-sleeper",
    "full": "bench-one",
}
EXCHANGE = "tideflow.events"
COUNTERS = {
    "statements": "tideflow_store_statements_total",
    "transactions": "tideflow_store_transactions_total",
    "published": "tideflow_broker_messages_published_total",
    "consumed": "tideflow_broker_messages_consumed_total",
}
BATCH = 100
PRELOAD_BATCH = 100_000
PRELOADED_FUNCTION = "bench-retired"
"""The preloaded runs' function: one the app had once, so they take no part in counting."""
QUEUES = ("tideflow.scheduler.events", "tideflow.jobs.bench")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TideflowSystem(System):
    name = "tideflow"
    own_code = ("tideflow/",)
    entry_code = ("tideflow/cli/",)
    workloads = ("one", "ten", "keyed", "limited", "debounce", "full")

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self.ingest = options.tideflow_ingest
        self.buffered_steps = options.tideflow_buffered_steps
        self.concurrency = options.concurrency
        self.description = (
            f"tideflow cluster: api, scheduler, worker --concurrency {self.concurrency}; "
            f"events by {'AMQP publish' if self.ingest == 'amqp' else 'POST /e batches'}"
        )
        self.wake_plan = (0.0, 0.0)
        """bench/sleepers.py: the first wake time (ms) and the spacing of the next ones."""
        self.api_port = free_port()
        self.metrics_ports = {"scheduler": free_port(), "worker": free_port()}

    def env(self) -> dict[str, str]:
        return {
            "TIDEFLOW_DATABASE_URL": pg_url(self.database),
            "TIDEFLOW_BROKER_URL": amqp_url(self.vhost),
            "TIDEFLOW_LOG_LEVEL": "WARNING",
            BUFFERED_STEPS_VARIABLE: str(self.buffered_steps or ""),
        }

    def start(self) -> None:
        recreate_database(self.database)
        recreate_vhost(self.vhost)
        tideflow = str(VENV_BIN / "tideflow")
        self.config = {
            "processes": ["api", "scheduler", "worker"],
            "worker_concurrency": self.concurrency,
            "ingest": self.ingest,
            "checkpointing_buffered_steps": self.buffered_steps or 1,
        }
        self.procs.env.update(self.env())
        self.procs.run("migrate", [tideflow, "migrate"], timeout=60)
        self.procs.start("api", [tideflow, "api", "--port", str(self.api_port)])
        self.procs.start(
            "scheduler",
            [tideflow, "scheduler"],
            {"TIDEFLOW_METRICS_PORT": str(self.metrics_ports["scheduler"])},
        )
        self.procs.start(
            "worker",
            [tideflow, "worker", "bench_app:client", "--concurrency", str(self.concurrency)],
            {"TIDEFLOW_METRICS_PORT": str(self.metrics_ports["worker"])},
        )
        wait_until("tideflow api /health", self._healthy, 60, self.procs)
        wait_until("tideflow worker's functions", self._registered, 60, self.procs)
        # Events published before the scheduler has bound its queue would be unroutable.
        for queue in QUEUES:
            wait_until(f"a consumer on {queue}", self._consumed(queue), 60, self.procs)
        # The scheduler learns of registered functions by polling the store (every second):
        # until it has, an event starts no run. Probe with one event a second until one does.
        probe = iter(range(1_000_000))

        def probed() -> bool:
            if self.completed("one") > 0:
                return True
            self.send("one", "probe-one", 1, None, start=next(probe))
            time.sleep(1.0)
            return self.completed("one") > 0

        wait_until("a first tideflow run", probed, 60, self.procs)

    def _healthy(self) -> bool:
        answer = httpx.get(f"http://127.0.0.1:{self.api_port}/health", timeout=2)
        return answer.status_code == 200

    def _consumed(self, queue: str) -> Callable[[], bool]:
        return lambda: amqp_consumers(self.vhost, queue) > 0

    def _registered(self) -> bool:
        found = self.db.one(
            "SELECT count(*) FROM functions WHERE function_id = ANY(%s)",
            (sorted(set(FUNCTIONS.values())),),
        )
        return int(found) == len(set(FUNCTIONS.values()))

    def cleanup(self) -> None:
        delete_vhost(self.vhost)

    # --- sending ---------------------------------------------------------------------------

    def _events(
        self, workload: str, phase: str, indices: range, start: int
    ) -> Iterator[dict[str, object]]:
        for i in indices:
            if workload == "sleep":
                base_ms, spacing_ms = self.wake_plan
                wake_ms = base_ms + (start + i) * spacing_ms
                yield {"name": EVENTS[workload], "data": {"phase": phase, "wake_ms": wake_ms}}
                continue
            if workload == "debounce":
                # A burst per run: its events share a key no other run has.
                for _ in range(BURST):
                    data = {"phase": phase, "sent_ms": now_ms(), "key": f"{phase}-{start + i}"}
                    yield {"name": EVENTS[workload], "data": data}
                continue
            data = {"i": start + i, "phase": phase, "sent_ms": now_ms(), "key": (start + i) % KEYS}
            yield {"name": EVENTS[workload], "data": data}

    def send(
        self, workload: str, phase: str, count: int, rate: float | None, start: int = 0
    ) -> None:
        if self.ingest == "http":
            self._send_http(workload, phase, count, rate, start)
        else:
            asyncio.run(self._send_amqp(workload, phase, count, rate, start))

    def _send_http(
        self, workload: str, phase: str, count: int, rate: float | None, start: int
    ) -> None:
        url = f"http://127.0.0.1:{self.api_port}/e/bench"
        with httpx.Client(timeout=30) as http:
            for indices in paced(count, rate, BATCH):
                answer = http.post(url, json=list(self._events(workload, phase, indices, start)))
                answer.raise_for_status()

    async def _send_amqp(
        self, workload: str, phase: str, count: int, rate: float | None, start: int
    ) -> None:
        import aio_pika

        connection = await aio_pika.connect(amqp_url(self.vhost))
        try:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(EXCHANGE, ensure=True)
            for indices in paced(count, rate, BATCH):
                await asyncio.gather(
                    *(
                        exchange.publish(
                            aio_pika.Message(
                                json.dumps(event).encode(),
                                content_type="application/json",
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            ),
                            routing_key=EVENTS[workload],
                            mandatory=True,
                        )
                        for event in self._events(workload, phase, indices, start)
                    )
                )
        finally:
            await connection.close()

    def preload(self, count: int) -> None:
        """Finished runs two days old, each with its event and one completed step, written
        `PRELOAD_BATCH` at a time (three statements a batch), then analysed, as autovacuum
        would have by then."""
        ended = now_ms() - 2 * 24 * 3600 * 1000
        for first in range(0, count, PRELOAD_BATCH):
            numbers = (first, min(count, first + PRELOAD_BATCH) - 1)
            self.db.execute(
                "INSERT INTO events (internal_id, name, data, ts, received_at, processed) "
                "SELECT 'pre-' || lpad(i::text, 10, '0'), %s, '{}', %s + i, %s + i, 1 "
                "FROM generate_series(%s::bigint, %s::bigint) AS i",
                (ONE_EVENT, ended, ended, *numbers),
            )
            self.db.execute(
                "INSERT INTO runs (run_id, function_id, app_id, event_id, status, events, "
                "output, queued_at, started_at, ended_at) "
                "SELECT 'prerun-' || lpad(i::text, 10, '0'), %s, 'bench', "
                "'pre-' || lpad(i::text, 10, '0'), 'Completed', '[{}]', '1', %s + i, %s + i, "
                "%s + i + 3 FROM generate_series(%s::bigint, %s::bigint) AS i",
                (PRELOADED_FUNCTION, ended, ended, ended, *numbers),
            )
            self.db.execute(
                "INSERT INTO steps (run_id, hash, name, op, status, attempt, output, started_at, "
                "ended_at) "
                "SELECT 'prerun-' || lpad(i::text, 10, '0'), 'h', 'only', 'StepRun', "
                "'Completed', 0, '1', %s + i + 1, %s + i + 2 "
                "FROM generate_series(%s::bigint, %s::bigint) AS i",
                (ended, ended, *numbers),
            )
        self.db.execute("ANALYZE", ())

    # --- measuring -------------------------------------------------------------------------

    def completed(self, workload: str) -> int:
        return int(
            self.db.one(
                "SELECT count(*) FROM runs WHERE function_id = %s AND status = 'Completed'",
                (FUNCTIONS[workload],),
            )
        )

    def latencies(self, workload: str, phase: str) -> dict[str, list[float]]:
        runs = self.db.all(
            "SELECT r.run_id, e.received_at, r.ended_at, e.data "
            "FROM runs r JOIN events e ON e.internal_id = r.event_id "
            "WHERE r.function_id = %s AND r.status = 'Completed' AND e.name = %s",
            (FUNCTIONS[workload], EVENTS[workload]),
        )
        phase_runs = {}
        for run_id, received, ended, data in runs:
            payload = json.loads(data) if isinstance(data, str) else data
            if payload.get("phase") == phase:
                phase_runs[run_id] = (received, ended, float(payload["sent_ms"]))
        steps = self.db.all(
            "SELECT run_id, started_at, ended_at FROM steps WHERE run_id = ANY(%s) "
            "ORDER BY run_id, started_at, ended_at, name",
            (list(phase_runs),),
        )
        queued: list[float] = []
        sched: list[float] = []
        e2e: list[float] = []
        for run_id, run_steps in itertools.groupby(steps, key=lambda row: row[0]):
            timed = [(started, ended) for _, started, ended in run_steps]
            received, ended, sent = phase_runs[run_id]
            queued.append(float(timed[0][0] - received))
            sched += [float(b[0] - a[1]) for a, b in itertools.pairwise(timed)]
            e2e.append(float(ended) - sent)
        result = {"queued": queued, "e2e": e2e}
        if sched:
            result["sched"] = sched
        return result

    def counters(self) -> dict[str, float] | None:
        """Each counter summed over the three processes; None if a process cannot be scraped.
        A counter that no process has yet is 0 (a phase reports it as n/a if still 0 after)."""
        urls = [f"http://127.0.0.1:{self.api_port}/metrics"] + [
            f"http://127.0.0.1:{port}/metrics" for port in self.metrics_ports.values()
        ]
        totals = dict.fromkeys(COUNTERS, 0.0)
        for url in urls:
            scraped = scrape(url, list(COUNTERS.values()))
            if scraped is None:
                return None
            for key, metric in COUNTERS.items():
                totals[key] += scraped.get(metric, 0.0)
        return totals
