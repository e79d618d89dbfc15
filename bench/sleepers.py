"""Sleeping runs: while N runs sleep, the idle scheduler and worker use little CPU; when their
times come, each wakes within a second of it.

    .venv/bin/python bench/sleepers.py [--runs 100000] [--window 60] [--idle 20]

Starts the tideflow cluster of bench/run.py (api, scheduler, worker on the local PostgreSQL and
RabbitMQ), sends N events of a function that sleeps until its own wake time and then runs one
step (wake times spread evenly over `--window` seconds, after an allowance for creating the
runs), waits until all N sleep, reads the scheduler's and the worker's CPU time from /proc over
`--idle` seconds, then waits for every run to end and reports each run's wake lateness: its
`woke` step's start minus its wake time. Writes bench/results/sleepers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from _harness import BENCH_DIR, BenchError, now_ms
from _system import Options
from sys_tideflow import FUNCTIONS, TideflowSystem

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def asleep(system: TideflowSystem) -> int:
    return int(
        system.db.one(
            "SELECT count(*) FROM steps s JOIN runs r ON r.run_id = s.run_id "
            "WHERE r.function_id = %s AND s.name = 'nap'",
            (FUNCTIONS["sleep"],),
        )
    )


def lateness_ms(system: TideflowSystem) -> list[float]:
    """Per run that was asleep before its wake time: its `woke` step's start minus that time."""
    rows = system.db.all(
        "SELECT e.data, nap.started_at, woke.started_at FROM runs r "
        "JOIN events e ON e.internal_id = r.event_id "
        "JOIN steps nap ON nap.run_id = r.run_id AND nap.name = 'nap' "
        "JOIN steps woke ON woke.run_id = r.run_id AND woke.name = 'woke' "
        "WHERE r.function_id = %s",
        (FUNCTIONS["sleep"],),
    )
    found = []
    for data, slept_at, woke_at in rows:
        wake_ms = float(json.loads(data)["wake_ms"])
        if slept_at < wake_ms:
            found.append(float(woke_at) - wake_ms)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=60.0, help="seconds the wakes spread over")
    parser.add_argument("--idle", type=float, default=20.0, help="seconds of idle CPU measured")
    parser.add_argument("--rate", type=float, default=150.0, help="runs/s assumed for creation")
    args = parser.parse_args(argv)
    options = Options(
        runs=args.runs,
        concurrency=10,
        latency_seconds=0,
        phase_timeout=0,
        keep=False,
        pg_settle=0,
        tideflow_ingest="amqp",
        celery_pool="prefork",
        celery_concurrency=None,
        dbos_polling_s=0.01,
    )
    system = TideflowSystem(options)
    result: dict[str, Any] = {"runs": args.runs, "window_s": args.window}
    try:
        system.start()
        allowance_s = args.runs / args.rate + args.idle + 20
        system.wake_plan = (now_ms() + allowance_s * 1000, args.window * 1000 / args.runs)
        first_wake = system.wake_plan[0] / 1000
        log(f"sending {args.runs} sleepers; the first wakes in {allowance_s:.0f}s")
        started = time.time()
        system.send("sleep", "sleepers", args.runs, None)
        while asleep(system) < args.runs:
            system.procs.check_alive()
            if time.time() > first_wake:
                raise BenchError(f"only {asleep(system)} of {args.runs} asleep by the first wake")
            time.sleep(1.0)
        result["create_s"] = time.time() - started
        log(f"all {args.runs} asleep after {result['create_s']:.0f}s; measuring idle CPU")
        time.sleep(3.0)  # the last outcomes and their acks settle
        procs = {p.name: p for p in system.procs.procs if p.name in ("scheduler", "worker")}
        span = min(args.idle, max(1.0, first_wake - time.time() - 2))
        before = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        time.sleep(span)
        result["idle_cpu_percent"] = {
            name: 100 * (cpu_seconds(p.pid) - before[name]) / span for name, p in procs.items()
        }
        log(f"idle CPU over {span:.0f}s: {result['idle_cpu_percent']}")
        deadline = first_wake + args.window + 120
        while system.completed("sleep") < args.runs:
            system.procs.check_alive()
            if time.time() > deadline:
                raise BenchError(f"{system.completed('sleep')} of {args.runs} woke in time")
            time.sleep(1.0)
        late = lateness_ms(system)
        result["woke"] = len(late)
        result["lateness_ms"] = {
            "p50": statistics.median(late),
            "p99": statistics.quantiles(late, n=100)[98] if len(late) >= 100 else max(late),
            "max": max(late),
            "within_1s": sum(1 for ms in late if ms <= 1000) / len(late),
        }
        log(f"woke: {result['lateness_ms']}")
    finally:
        system.stop()
    out = BENCH_DIR / "results" / "sleepers.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    cpu = result["idle_cpu_percent"]
    late_ms = result["lateness_ms"]
    print(
        f"{args.runs} sleeping runs (created in {result['create_s']:.0f}s): idle CPU "
        f"scheduler {cpu['scheduler']:.1f}% worker {cpu['worker']:.1f}% of a core; wake "
        f"lateness p50 {late_ms['p50']:.0f} ms, p99 {late_ms['p99']:.0f} ms, max "
        f"{late_ms['max']:.0f} ms; {100 * late_ms['within_1s']:.1f}% within 1 s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
