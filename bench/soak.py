"""Soak: a bounded mixed load for a set time, then checks that nothing leaked or was lost.

    .venv/bin/python bench/soak.py --minutes N [--ticks-per-s 1] [--schedulers 2] [--workers 2]
        [--database-url URL --broker-url URL] [--json PATH]

Starts a tideflow cluster (api, schedulers, workers running bench/soak_app.py) on PostgreSQL and
RabbitMQ: a fresh database and vhost, or the ones given. Every tick it sends one event of each
kind of load (bench/_soak_load.py: steps, sleeps, waits answered or timing out, retries that
recover or fail, runs cancelled by event or by the API, concurrency with throttle, debounced
bursts) and acts on the runs that wait for an answer or a cancel. While it runs it samples the
RSS and open file descriptors of every process. Then it stops sending, waits for every run to
end, and checks:

- each run ended in the state its script expects (runs lost: a run missing or not ended; a
  wrong end state; duplicates: an event with two runs or a step recorded twice);
- RSS and open fds are flat after warm-up: the median of the last fifth of the samples taken
  after the warm-up (the first third, at least 30 s) is at most RSS_TOLERANCE (and fds at most
  FD_TOLERANCE) above the median of their first fifth;
- RabbitMQ's queues, the store's pending and queued jobs, unprocessed events, waits and timers
  are all back to zero.

Prints the figures, writes them as JSON (`--json`, default bench/results/soak.json) and exits
1 if a check failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
from _soak_load import RETRIES, Load, Verdict, patiently

BENCH_DIR = pathlib.Path(__file__).resolve().parent
TIDEFLOW = str(pathlib.Path(sys.executable).with_name("tideflow"))
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
SAMPLE_S = 5.0
RSS_TOLERANCE = (0.10, 12 * 1024)
"""RSS may grow by 10% or 12 MiB (in KiB), whichever is more, between the two windows."""
FD_TOLERANCE = 4
DRAIN_S = 120.0


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def servers(database_url: str | None, broker_url: str | None) -> Iterator[tuple[str, str]]:
    """The given database and vhost, or fresh ones, deleted afterwards."""
    if database_url and broker_url:
        yield database_url, broker_url
        return
    name = f"tideflow_soak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    subprocess.run(["rabbitmqctl", "-q", "add_vhost", name], check=True, capture_output=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*"],
        check=True,
        capture_output=True,
    )
    try:
        yield (
            f"postgresql://postgres@127.0.0.1:5432/{name}",
            f"amqp://guest:guest@127.0.0.1:5672/{name}",
        )
    finally:
        subprocess.run(["rabbitmqctl", "-q", "delete_vhost", name], capture_output=True)
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Cluster:
    def __init__(self, env: dict[str, str], log_dir: pathlib.Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.port = _free_port()

    def start(self, name: str, *args: str) -> None:
        output = (self.log_dir / f"{name}.log").open("wb")
        self.processes[name] = subprocess.Popen(
            [TIDEFLOW, *args], cwd=BENCH_DIR, env=self.env, stdout=output, stderr=output
        )

    def dead(self) -> list[str]:
        return [name for name, popen in self.processes.items() if popen.poll() is not None]

    def stop(self) -> None:
        for popen in self.processes.values():
            if popen.poll() is None:
                popen.terminate()
        for popen in self.processes.values():
            try:
                popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample(cluster: Cluster) -> dict[str, tuple[int, int]]:
    """Each live process's RSS (KiB) and open file descriptors."""
    found = {}
    for name, popen in cluster.processes.items():
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            status = pathlib.Path(f"/proc/{popen.pid}/status").read_text()
            rss = next(
                int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS")
            )
            found[name] = (rss, len(list(pathlib.Path(f"/proc/{popen.pid}/fd").iterdir())))
    return found


def flatness(
    samples: list[tuple[float, dict[str, tuple[int, int]]]], warmup_s: float
) -> dict[str, Any]:
    """Per process: the medians of the first and last fifth of the samples after warm-up."""
    after = [values for at, values in samples if at >= warmup_s]
    fifth = max(1, len(after) // 5)
    result: dict[str, Any] = {}
    for name in after[0] if after else {}:
        first = [values[name] for values in after[:fifth] if name in values]
        last = [values[name] for values in after[-fifth:] if name in values]
        rss_before = statistics.median(rss for rss, _ in first)
        rss_after = statistics.median(rss for rss, _ in last)
        fds_before = statistics.median(fds for _, fds in first)
        fds_after = statistics.median(fds for _, fds in last)
        allowed = max(rss_before * RSS_TOLERANCE[0], RSS_TOLERANCE[1])
        result[name] = {
            "rss_kib": [rss_before, rss_after],
            "fds": [fds_before, fds_after],
            "flat": rss_after - rss_before <= allowed and fds_after - fds_before <= FD_TOLERANCE,
        }
    return result


def queue_depths(vhost: str) -> dict[str, int]:
    done = subprocess.run(
        [
            "rabbitmqctl",
            "-q",
            "list_queues",
            "-p",
            vhost,
            "name",
            "messages",
            "--formatter",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {queue["name"]: int(queue["messages"]) for queue in json.loads(done.stdout or "[]")}


def store_backlog(database_url: str) -> dict[str, int]:
    queries = {
        "pending_or_queued_jobs": "SELECT count(*) FROM jobs WHERE status IN ('pending', 'queued')",
        "unprocessed_events": "SELECT count(*) FROM events WHERE processed = 0",
        "waits": "SELECT count(*) FROM waits",
        "timers": "SELECT count(*) FROM timers",
        "live_runs": "SELECT count(*) FROM runs WHERE status IN ('Queued', 'Running')",
    }
    counts: dict[str, int] = {}
    with psycopg.connect(database_url) as conn:
        for name, sql in queries.items():
            row = conn.execute(sql).fetchone()
            counts[name] = int(row[0]) if row else 0
    return counts


def until_backlog_clears(
    database_url: str, vhost: str, timeout_s: float
) -> tuple[dict[str, int], dict[str, int]]:
    deadline = time.monotonic() + timeout_s
    while True:
        backlog = patiently(lambda: store_backlog(database_url), "SELECT backlog")
        depths = queue_depths(vhost)
        if not any(backlog.values()) and not any(depths.values()):
            return backlog, depths
        if time.monotonic() > deadline:
            return backlog, depths
        time.sleep(1.0)


def soak(args: argparse.Namespace, database_url: str, broker_url: str) -> dict[str, Any]:
    log_dir = pathlib.Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "TIDEFLOW_DATABASE_URL": database_url,
        "TIDEFLOW_BROKER_URL": broker_url,
        "TIDEFLOW_RETRY_BACKOFF_BASE_MS": "200",
        "TIDEFLOW_LOG_LEVEL": "WARNING",
    }
    subprocess.run([TIDEFLOW, "migrate"], env=env, cwd=BENCH_DIR, check=True, capture_output=True)
    cluster = Cluster(env, log_dir)
    cluster.start("api", "api", "--port", str(cluster.port))
    for n in range(args.schedulers):
        cluster.start(f"scheduler-{n}", "scheduler")
    for n in range(args.workers):
        cluster.start(f"worker-{n}", "worker", "soak_app:client", "--concurrency", "10")
    http = httpx.Client(base_url=f"http://127.0.0.1:{cluster.port}", timeout=30)
    try:
        load = Load(http)
        load.until_ready(cluster.dead)
        return run_load(args, cluster, load, database_url, broker_url)
    finally:
        http.close()
        cluster.stop()


def run_load(
    args: argparse.Namespace, cluster: Cluster, load: Load, database_url: str, broker_url: str
) -> dict[str, Any]:
    duration_s = args.minutes * 60
    warmup_s = max(30.0, duration_s / 3)
    samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
    started = time.monotonic()
    next_sample = 0.0
    log(f"load for {duration_s:.0f}s (warm-up {warmup_s:.0f}s)")
    while (elapsed := time.monotonic() - started) < duration_s:
        if cluster.dead():
            raise SystemExit(f"processes died: {cluster.dead()}")
        load.tick()
        if elapsed >= next_sample:
            samples.append((elapsed, sample(cluster)))
            next_sample += SAMPLE_S
        time.sleep(max(0.0, 1.0 / args.ticks_per_s - (time.monotonic() - started - elapsed)))
    log(f"sent {load.sent} events; draining")
    verdict = load.drain(database_url, DRAIN_S)
    samples.append((time.monotonic() - started, sample(cluster)))
    vhost = broker_url.rsplit("/", 1)[1]
    backlog, depths = until_backlog_clears(database_url, vhost, 30.0)
    return report(args, verdict, flatness(samples, warmup_s), backlog, depths, cluster.dead())


def report(
    args: argparse.Namespace,
    verdict: Verdict,
    flat: dict[str, Any],
    backlog: dict[str, int],
    depths: dict[str, int],
    dead: list[str],
) -> dict[str, Any]:
    checks = {
        "every run ended as its script expects": not verdict.wrong and not verdict.lost,
        "no duplicates": verdict.duplicates == 0,
        "rss and fds flat after warm-up": all(p["flat"] for p in flat.values()) and bool(flat),
        "queues empty": not any(depths.values()),
        "store backlog empty": not any(backlog.values()),
        "no process died": not dead,
    }
    result = {
        "minutes": args.minutes,
        "events_sent": verdict.events,
        "runs": verdict.runs,
        "cases_by_kind": verdict.cases,
        "runs_lost": len(verdict.lost),
        "wrong_end_state": verdict.wrong[:20],
        "duplicates": verdict.duplicates,
        "processes": flat,
        "tolerance": {"rss": "max(10%, 12 MiB)", "fds": FD_TOLERANCE},
        "queues": depths,
        "store": backlog,
        "checks": checks,
        "transient_retries": dict(RETRIES),
    }
    print(
        f"soak {args.minutes} min: {verdict.events} events, {verdict.runs} runs "
        f"{dict(verdict.cases)}; runs lost {len(verdict.lost)}; wrong end state "
        f"{len(verdict.wrong)}; duplicates {verdict.duplicates}"
    )
    for name, figures in flat.items():
        print(f"  {name}: rss KiB {figures['rss_kib']} fds {figures['fds']} flat={figures['flat']}")
    print(
        f"  queues {depths}; store {backlog}; calls retried while a server was away {dict(RETRIES)}"
    )
    for check, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {check}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, required=True)
    parser.add_argument("--ticks-per-s", type=float, default=1.0)
    parser.add_argument("--schedulers", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url")
    parser.add_argument("--broker-url")
    parser.add_argument("--json", default=str(BENCH_DIR / "results" / "soak.json"))
    parser.add_argument("--log-dir", default=str(BENCH_DIR / "results" / "logs" / "soak"))
    args = parser.parse_args()
    with servers(args.database_url, args.broker_url) as (database_url, broker_url):
        result = soak(args, database_url, broker_url)
    pathlib.Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
