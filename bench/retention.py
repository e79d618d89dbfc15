"""The retention bench (tideflow only): the 1-step workload's throughput while the scheduler's
sweeper deletes runs past their retention, against the same without, in one invocation.

    .venv/bin/python bench/retention.py [--old-runs 100000] [--runs 2000]
    .venv/bin/python bench/run.py --retention [...]

Starts the tideflow cluster of bench/run.py (TIDEFLOW_RETENTION at its default, 7 days), runs
the 1-step workload in bursts (`--runs` each) with nothing to delete (baseline), then fills the
tables with `--old-runs` runs that ended 8 days ago (one step and one event each, in a few
statements) and runs the same bursts while the sweeper deletes them (checked: old runs are
going during every such burst), then a last baseline burst once they are all gone. Prints the
ratio of the runs/s medians (with retention deleting / without) and writes
bench/results/retention.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from _harness import BENCH_DIR, LOG_DIR, Processes, base_env, pg_url
from _system import Options
from sys_tideflow import TideflowSystem

DAY_MS = 86_400_000
OLD_FUNCTION = "bench-old"


class RetentionSystem(TideflowSystem):
    """bench/run.py's tideflow cluster on a database, vhost and log directory of its own, so
    that it can run beside the main bench without touching it."""

    def __init__(self, options: Options) -> None:
        super().__init__(options)
        self.database = self.vhost = "tideflow_bench_retention"
        self.procs = Processes(LOG_DIR / "retention", base_env(), BENCH_DIR)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def fill_old_runs(database: str, count: int) -> None:
    """`count` runs of a function of their own that ended 8 days ago, with a step and an event
    each, in the store's own format."""
    old = int(time.time() * 1000) - 8 * DAY_MS
    params = {"count": count, "old": old}
    with psycopg.connect(pg_url(database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO events (internal_id, name, data, ts, received_at, processed) "
            "SELECT 'old-event-' || g, 'bench/old', '{}', %(old)s, %(old)s, 1 "
            "FROM generate_series(1, %(count)s) AS g",
            params,
        )
        conn.execute(
            "INSERT INTO runs (run_id, function_id, app_id, event_id, status, events, output, "
            "queued_at, started_at, ended_at) "
            f"SELECT 'old-run-' || g, '{OLD_FUNCTION}', 'bench', 'old-event-' || g, 'Completed', "
            "'[]', '1', %(old)s, %(old)s, %(old)s + g FROM generate_series(1, %(count)s) AS g",
            params,
        )
        conn.execute(
            "INSERT INTO steps (run_id, hash, name, op, status, output, started_at, ended_at) "
            "SELECT 'old-run-' || g, 'old-step', 's0', 'run', 'Completed', '1', %(old)s, "
            "%(old)s FROM generate_series(1, %(count)s) AS g",
            params,
        )


def old_runs(system: TideflowSystem) -> int:
    return int(system.db.one("SELECT count(*) FROM runs WHERE function_id = %s", (OLD_FUNCTION,)))


def burst(system: TideflowSystem, name: str, runs: int) -> float:
    phase = system.run_phase("one", name, runs, None, "throughput")
    if phase.completed < runs or phase.runs_per_s is None:
        raise SystemExit(f"{name}: {phase.completed} of {runs} runs completed ({phase.note})")
    log(f"{name}: {phase.runs_per_s:.0f} runs/s")
    return phase.runs_per_s


def measure(system: TideflowSystem, args: argparse.Namespace) -> dict[str, Any]:
    for n in range(2):  # warm-up
        burst(system, f"warm-{n}", min(args.runs, 300))
    without = [burst(system, f"without-{n}", args.runs) for n in range(args.bursts)]
    started = time.monotonic()
    fill_old_runs(system.database, args.old_runs)
    log(f"filled {args.old_runs} old runs in {time.monotonic() - started:.1f}s")
    with_retention: list[float] = []
    deleted: list[int] = []
    for n in range(args.bursts):
        before = old_runs(system)
        with_retention.append(burst(system, f"with-{n}", args.runs))
        gone = before - old_runs(system)
        if gone <= 0:
            raise SystemExit(
                f"with-{n}: retention deleted nothing during the burst; add --old-runs"
            )
        deleted.append(gone)
    started = time.monotonic()
    while old_runs(system) and time.monotonic() - started < 600:
        time.sleep(1.0)
    cleared_s = time.monotonic() - started
    without.append(burst(system, "without-after", args.runs))
    ratio = statistics.median(with_retention) / statistics.median(without)
    return {
        "old_runs": args.old_runs,
        "runs_per_burst": args.runs,
        "runs_per_s_without": [round(x, 1) for x in without],
        "runs_per_s_with_retention": [round(x, 1) for x in with_retention],
        "old_runs_deleted_during_each_burst": deleted,
        "seconds_to_clear_the_rest": round(cleared_s, 1),
        "ratio_with_over_without": round(ratio, 3),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--old-runs", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=2000, help="runs per burst")
    parser.add_argument("--bursts", type=int, default=3, help="bursts with and without")
    parser.add_argument("--json", default=str(BENCH_DIR / "results" / "retention.json"))
    args = parser.parse_args(argv)
    system = RetentionSystem(
        Options(
            runs=args.runs,
            concurrency=10,
            latency_seconds=3.0,
            phase_timeout=120.0,
            keep=False,
            pg_settle=0.0,
            tideflow_ingest="amqp",
            celery_pool="prefork",
            celery_concurrency=None,
            dbos_polling_s=0.01,
        )
    )
    try:
        system.start()
        result = measure(system, args)
    finally:
        system.stop()
    print(
        f"1-step runs/s without retention {result['runs_per_s_without']}, while retention "
        f"deletes {result['old_runs']} old runs {result['runs_per_s_with_retention']} "
        f"(deleted during each burst: {result['old_runs_deleted_during_each_burst']}); "
        f"ratio with/without {result['ratio_with_over_without']}"
    )
    with open(args.json, "w") as out:
        json.dump(result, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
