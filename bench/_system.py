"""A system under test, and the phases every system goes through: a burst of runs measured
for throughput, then runs sent at a fixed rate measured for latency."""

from __future__ import annotations

import abc
import dataclasses
import threading
import time
from typing import Any

from _harness import (
    LOG_DIR,
    BenchError,
    Db,
    Processes,
    base_env,
    cpu_snapshot,
    drop_database,
    summarize,
    xact_commits,
)

WORKLOADS: dict[str, int] = {
    "one": 1,
    "ten": 10,
    "keyed": 1,
    "limited": 1,
    "debounce": 1,
    "full": 1,
}
"""Workload name -> steps a run."""

COMMON_WORKLOADS = ("one", "ten")
"""What every system runs; the others are tideflow's flow control, which the peers lack."""

LABELS = {
    "keyed": "keyed concurrency: 1,000 keys, limit 1 each",
    "limited": "concurrency 10 + throttle 5,000/s",
    "debounce": "debounce 1 s: a run per burst of 10 events",
    "full": "one, with finished runs preloaded (--preload)",
}
"""How the table names a workload, when not by its name alone."""


@dataclasses.dataclass
class Options:
    runs: int
    concurrency: int
    latency_seconds: float
    phase_timeout: float
    keep: bool
    pg_settle: float
    tideflow_ingest: str
    celery_pool: str
    celery_concurrency: int | None
    dbos_polling_s: float
    profile: bool = False
    tideflow_buffered_steps: int | None = None
    preload: int = 0
    """Finished runs written into the database before the `full` workload (0: no `full`)."""


@dataclasses.dataclass
class Phase:
    system: str
    workload: str
    kind: str  # "throughput" or "latency"
    runs: int
    completed: int = 0
    seconds: float = 0.0
    rate: float | None = None
    send_seconds: float = 0.0
    latency: dict[str, dict[str, float | int | None]] = dataclasses.field(default_factory=dict)
    per_step: dict[str, float | None] = dataclasses.field(default_factory=dict)
    cpu_ms_per_step: dict[str, float] = dataclasses.field(default_factory=dict)
    cpu_utilization: float | None = None
    note: str = ""

    @property
    def steps(self) -> int:
        return self.completed * WORKLOADS[self.workload]

    @property
    def runs_per_s(self) -> float | None:
        return self.completed / self.seconds if self.seconds > 0 and self.completed else None

    @property
    def steps_per_s(self) -> float | None:
        rps = self.runs_per_s
        return None if rps is None else rps * WORKLOADS[self.workload]

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["steps"] = self.steps
        data["runs_per_s"] = self.runs_per_s
        data["steps_per_s"] = self.steps_per_s
        return data


class System(abc.ABC):
    name: str
    description: str
    own_code: tuple[str, ...]
    """How py-spy names the files of the system's own code (for --profile)."""
    entry_code: tuple[str, ...] = ()
    """Own files that are only the process's entry point (left out of --profile's frames)."""

    workloads: tuple[str, ...] = COMMON_WORKLOADS
    """The workloads this system runs, in order."""

    def preload(self, count: int) -> None:
        """Writes `count` finished runs into the system's database (the `full` workload)."""
        raise BenchError(f"{self.name} has no `full` workload")

    def __init__(self, options: Options) -> None:
        self.options = options
        self.database = f"tideflow_bench_{self.name}"
        self.vhost = f"tideflow_bench_{self.name}"
        self.procs = Processes(LOG_DIR / self.name, base_env(), LOG_DIR.parent.parent)
        self._db: Db | None = None
        self.config: dict[str, Any] = {}

    @property
    def db(self) -> Db:
        if self._db is None:
            self._db = Db(self.database)
        return self._db

    @abc.abstractmethod
    def start(self) -> None:
        """Fresh database and vhost, processes started and ready."""

    def stop(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self.procs.stop_all()
        self.cleanup()
        if not self.options.keep:
            drop_database(self.database)

    @abc.abstractmethod
    def cleanup(self) -> None:
        """Anything besides processes and the database (the vhost)."""

    @abc.abstractmethod
    def send(self, workload: str, phase: str, count: int, rate: float | None) -> None:
        """Starts `count` runs of the workload, all at once (rate None) or at `rate` a second.
        Runs in a thread of its own; returns when all are sent."""

    @abc.abstractmethod
    def completed(self, workload: str) -> int:
        """Runs of the workload completed so far (all phases)."""

    @abc.abstractmethod
    def latencies(self, workload: str, phase: str) -> dict[str, list[float]]:
        """Per-run (or per-step) latencies in ms of a finished phase, by kind."""

    def cpu(self) -> dict[str, float]:
        sessions = {proc.name: proc.pid for proc in self.procs.procs if proc.alive()}
        return cpu_snapshot(sessions, self.database)

    def counters(self) -> dict[str, float] | None:
        """The system's own counters (round trips, messages), if it has any."""
        return None

    # --- phases ----------------------------------------------------------------------------

    def run_phase(
        self,
        workload: str,
        phase: str,
        count: int,
        rate: float | None,
        kind: str,
        timeout: float | None = None,
    ) -> Phase:
        result = Phase(self.name, workload, kind, count, rate=rate)
        before = self.completed(workload)
        counters_before = self.counters()
        cpu_before = self.cpu()
        errors: list[BaseException] = []
        send_done = threading.Event()
        send_time: list[float] = []

        def sender() -> None:
            started = time.monotonic()
            try:
                self.send(workload, phase, count, rate)
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)
            finally:
                send_time.append(time.monotonic() - started)
                send_done.set()

        started = time.monotonic()
        thread = threading.Thread(target=sender, name=f"send-{self.name}", daemon=True)
        thread.start()
        timeout = self.options.phase_timeout if timeout is None else timeout
        deadline = started + timeout + (count / rate if rate else 0.0)
        done = self._await_completion(workload, before + count, deadline, errors)
        result.seconds = time.monotonic() - started
        cpu_after = self.cpu()
        result.completed = min(done - before, count)
        if result.completed < count:
            result.note = f"timeout: {result.completed}/{count} completed"
        send_done.wait(30)
        result.send_seconds = send_time[0] if send_time else 0.0
        if errors:
            raise BenchError(f"{self.name}: sending failed: {errors[0]!r}") from errors[0]
        if kind == "latency":
            result.latency = {k: summarize(v) for k, v in self.latencies(workload, phase).items()}
        steps = result.steps
        used = {k: cpu_after[k] - cpu_before.get(k, 0.0) for k in cpu_after}
        if steps:
            result.cpu_ms_per_step = {k: round(v * 1000 / steps, 3) for k, v in used.items()}
        result.cpu_utilization = sum(used.values()) / result.seconds if result.seconds else None
        if counters_before is not None:
            time.sleep(0.5)  # what follows a run's completion (its finished event) is counted too
        counters_after = self.counters()
        for key in counters_after or {}:
            if counters_before is None or counters_after is None or not counters_after[key]:
                result.per_step[key] = None  # not exposed, or never counted: not instrumented
            else:
                delta = counters_after[key] - counters_before.get(key, 0.0)
                result.per_step[key] = delta / steps if steps else None
        return result

    def _await_completion(
        self, workload: str, target: int, deadline: float, errors: list[BaseException]
    ) -> int:
        """Polls the completed count until it reaches `target` or the deadline passes."""
        last_check = time.monotonic()
        while True:
            done = self.completed(workload)
            if done >= target or time.monotonic() > deadline:
                return done
            if errors:
                raise BenchError(f"{self.name}: sending failed: {errors[0]!r}") from errors[0]
            if time.monotonic() - last_check > 2.0:
                self.procs.check_alive()
                last_check = time.monotonic()
            time.sleep(0.05)

    def settled_xacts(self, settle: float) -> int:
        """pg_stat_database's commits of the bench database once every backend has published
        its statistics (an idle backend may hold them back up to 10 s), less the bench's own."""
        time.sleep(settle)
        return xact_commits(self.database) - self.db.own_xacts
