"""A tideflow cluster of real processes (api, schedulers, workers) on PostgreSQL and RabbitMQ,
started with the commands of docker-compose.yml."""

from __future__ import annotations

import collections
import pathlib
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx
import yaml
from helpers import TIDEFLOW, Api, Process, eventually, free_port

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())

APP = """
import os, time
import tideflow

client = tideflow.Client(app_id="cluster")
LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bodies.log")


def body(run_id, name, seconds):
    with open(LOG, "a") as log:
        log.write(f"{run_id} {name} {os.getpid()}\\n")
    time.sleep(seconds)
    return name


@client.create_function(fn_id="flow", trigger=tideflow.TriggerEvent(event="cluster/go"), retries=3)
def flow(ctx):
    a = ctx.step.run("a", body, ctx.run_id, "a", ctx.event.data.get("slow_s", 0))
    ctx.step.sleep("nap", ctx.event.data.get("nap", "100ms"))
    poked = None
    if ctx.event.data.get("wait"):
        poked = ctx.step.wait_for_event(
            "poke", event="cluster/poke", if_exp="event.data.n == async.data.n", timeout="120s"
        )
    b = ctx.step.run("b", body, ctx.run_id, "b", 0)
    return {"a": a, "b": b, "n": ctx.event.data["n"], "poked": None if poked is None else poked.data["n"]}
"""


def compose_command(service: str, **replace: str) -> list[str]:
    """A service's command from docker-compose.yml, with named arguments swapped (a port, the app)."""
    command = [str(part) for part in COMPOSE["services"][service]["command"]]
    return [replace.get(part, part) for part in command]


class Cluster:
    def __init__(
        self,
        tmp_path: pathlib.Path,
        *,
        database_url: str,
        broker_url: str,
        lease_s: float = 3,
        app: str = APP,
        known_function: str = "cluster-flow",
    ) -> None:
        self.dir = tmp_path
        (tmp_path / "clusterapp.py").write_text(app)
        self.known_function = known_function
        self.env = {
            "TIDEFLOW_DATABASE_URL": database_url,
            "TIDEFLOW_BROKER_URL": broker_url,
            "TIDEFLOW_LEASE_S": str(lease_s),
            "TIDEFLOW_RETRY_BACKOFF_BASE_MS": "100",
            "TIDEFLOW_LOG_LEVEL": "INFO",
        }
        self.port = free_port()
        self.processes: list[Process] = []
        self.metrics_ports: dict[str, int] = {}
        self.schedulers: list[Process] = []
        self.workers: list[Process] = []
        self.api = Api(self.port)

    def migrate(self) -> None:
        subprocess.run(
            [TIDEFLOW, *compose_command("migrate")],
            cwd=self.dir,
            env=self._full_env(),
            check=True,
            timeout=60,
        )

    def _full_env(self) -> dict[str, str]:
        import os

        return {**os.environ, **self.env}

    def _start(
        self,
        args: list[str],
        name: str,
        *,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> Process:
        # Each process serves its Prometheus metrics on a port of its own.
        port = free_port()
        env = {**self.env, "TIDEFLOW_METRICS_PORT": str(port), **(env or {})}
        process = Process(args, cwd=self.dir, env=env, name=name, prefix=prefix)
        self.metrics_ports[name] = port
        self.processes.append(process)
        return process

    def metric(self, name: str, sample: str) -> float:
        """The sum of a process's samples of a metric (`sample` is its name with labels, as
        the text format prints it, or a prefix of that)."""
        text = httpx.get(f"http://127.0.0.1:{self.metrics_ports[name]}/metrics", timeout=10).text
        return sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample)
        )

    def start(self, *, schedulers: int = 2, workers: int = 2) -> None:
        self.migrate()
        self._start(compose_command("api", **{"8288": str(self.port)}), "api")
        for n in range(schedulers):
            self.schedulers.append(self._start(compose_command("scheduler"), f"scheduler-{n}"))
        for _ in range(workers):
            self.start_worker()
        eventually(self.api.healthy, what="the API to answer")
        # Events sent before the schedulers know the functions would start no run.
        for scheduler in self.schedulers:
            eventually(
                lambda s=scheduler: self.known_function in s.output(),
                what="schedulers to know the functions",
            )

    def start_worker(
        self, *, prefix: Sequence[str] = (), env: Mapping[str, str] | None = None
    ) -> Process:
        """A worker; `prefix` wraps its command (e.g. to run it in a network namespace) and
        `env` adds to or overrides the cluster's settings."""
        command = compose_command("worker", **{"examples.shop:client": "clusterapp:client"})
        worker = self._start(command, f"worker-{len(self.workers)}", prefix=prefix, env=env)
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for process in self.processes:
            process.stop()
        self.api.http.close()

    def all_alive(self) -> dict[str, bool]:
        return {process.log_path.stem: process.popen.poll() is None for process in self.processes}

    def send(self, events: list[dict[str, Any]], *, timeout_s: float = 60) -> list[str]:
        """Posts events as a patient producer does: retrying while the API cannot store them."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.api.send(*events)
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def wait_for_all(
        self, event_ids: list[str], *, timeout_s: float = 90
    ) -> dict[str, dict[str, Any]]:
        """Each event's single run, once all have ended."""
        deadline = time.monotonic() + timeout_s
        runs: dict[str, dict[str, Any]] = {}
        pending = list(event_ids)
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{len(pending)} of {len(event_ids)} runs not ended; e.g. {pending[:3]}; alive: {self.all_alive()}"
                )
            still = []
            for event_id in pending:
                try:
                    found = self.api.runs(event_id)
                except httpx.HTTPError:
                    still.append(event_id)
                    continue
                if found and found[0]["status"] in ("Completed", "Failed", "Cancelled"):
                    assert len(found) == 1, f"event {event_id} started {len(found)} runs"
                    runs[event_id] = found[0]
                else:
                    still.append(event_id)
            pending = still
            if pending:
                time.sleep(0.3)
        return runs

    def body_executions(self) -> collections.Counter[tuple[str, str]]:
        log = self.dir / "bodies.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return collections.Counter((line.split()[0], line.split()[1]) for line in lines)

    def logs(self) -> str:
        return "\n".join(f"== {p.log_path.name}\n{p.output()[-3000:]}" for p in self.processes)


ClusterOf = Callable[..., Cluster]
"""The `cluster_of` fixture: makes a `Cluster` from `Cluster`'s keyword arguments."""
