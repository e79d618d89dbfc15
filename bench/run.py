"""The tideflow benchmark: tideflow in cluster mode, Celery and DBOS Transact, on this machine's
PostgreSQL and RabbitMQ, each with a fresh database and vhost; prints one table and writes
bench/results/latest.json.

    .venv/bin/python bench/run.py [--quick] [--runs N] [--systems tideflow,celery,dbos]
                                  [--preload N]   (tideflow's `full` workload; default 1,000,000)
    .venv/bin/python bench/run.py --matching [--quick]   (bench/matching.py: tideflow only)
    .venv/bin/python bench/run.py --retention [...]      (bench/retention.py: tideflow only)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from _harness import (
    BENCH_DIR,
    BenchError,
    Canary,
    load_average,
    signals_deferred,
    sigterm_as_interrupt,
)
from _profile import sampled, summarize
from _system import LABELS, WORKLOADS, Options, Phase, System

SYSTEMS = ("tideflow", "celery", "dbos")
WARMUP_RUNS = 30
IDLE_SECONDS = 6.0


def make_system(name: str, options: Options) -> System:
    if name == "tideflow":
        from sys_tideflow import TideflowSystem

        return TideflowSystem(options)
    if name == "celery":
        from sys_celery import CelerySystem

        return CelerySystem(options)
    if name == "dbos":
        from sys_dbos import DbosSystem

        return DbosSystem(options)
    raise SystemExit(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")


def log(message: str) -> None:
    stamp = datetime.datetime.now().strftime("%H:%M:%S")  # noqa: DTZ005 - a local clock
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


def warm_up(system: System) -> None:
    """A few runs of each workload: every part connected, every code path imported."""
    started = time.monotonic()
    for workload in system.workloads:
        if workload == "full":
            continue  # the `one` function's, warmed up as `one`
        warm = system.run_phase(workload, f"w-{workload}", WARMUP_RUNS, None, "warmup", 60.0)
        if warm.completed < WARMUP_RUNS:
            raise BenchError(
                f"warm-up: {warm.completed} of {WARMUP_RUNS} {workload} runs completed in "
                f"{warm.seconds:.0f}s; see the logs in {system.procs.log_dir}"
            )
    log(f"{system.name}: warmed up in {time.monotonic() - started:.1f}s")


def measure(system: System, options: Options, phases: list[Phase]) -> None:
    """Per workload: a burst (throughput), then a fixed rate at half the burst's rate
    (latency); appends each phase as it ends. PostgreSQL's transaction count is read around
    each workload's two phases."""
    warm_up(system)
    settle = options.pg_settle
    xacts = system.settled_xacts(settle) if settle > 0 else None
    window_started = time.monotonic()
    windows: list[tuple[Phase, int, int, float]] = []  # burst, steps, xacts, seconds
    for workload in system.workloads:
        if workload == "full":
            if not options.preload:
                continue
            log(f"{system.name}: writing {options.preload:,} finished runs into its database")
            loaded = time.monotonic()
            system.preload(options.preload)
            log(f"{system.name}: preloaded in {time.monotonic() - loaded:.0f}s")
        log(f"{system.name}: {workload}: {options.runs} runs at once")
        burst = system.run_phase(workload, f"t-{workload}", options.runs, None, "throughput")
        log(f"{system.name}: {workload}: {_fmt(burst.runs_per_s)} runs/s {burst.note}")
        phases.append(burst)
        steps = burst.steps
        if burst.runs_per_s:
            rate = burst.runs_per_s / 2.0
            count = max(20, round(rate * options.latency_seconds))
            log(f"{system.name}: {workload}: {count} runs at {rate:.1f}/s")
            paced_phase = system.run_phase(workload, f"l-{workload}", count, rate, "latency")
            log(f"{system.name}: {workload}: {_latency_line(paced_phase)}")
            phases.append(paced_phase)
            steps += paced_phase.steps
        burst.per_step["pg_xacts"] = None
        if xacts is not None:
            now = system.settled_xacts(settle)
            windows.append((burst, steps, now - xacts, time.monotonic() - window_started))
            xacts, window_started = now, time.monotonic()
    if xacts is not None:
        # What the system commits when idle (DBOS polls its queue): measured after the
        # last window and taken out of each window's count, pro rata of its length.
        time.sleep(IDLE_SECONDS)
        idle_rate = max(0.0, (system.settled_xacts(0) - xacts) / IDLE_SECONDS)
        for burst, steps, count, seconds in windows:
            if steps:
                burst.per_step["pg_xacts_raw"] = count / steps
                burst.per_step["pg_xacts"] = max(0.0, count - idle_rate * seconds) / steps
                burst.per_step["pg_idle_xacts_per_s"] = idle_rate


def profile(system: System, options: Options) -> dict[str, Any]:
    """An extra burst per workload with py-spy sampling every process of the system."""
    found: dict[str, Any] = {}
    out_dir = BENCH_DIR / "results" / "profiles"
    for workload in system.workloads:
        if workload == "full" and not options.preload:
            continue
        log(f"{system.name}: {workload}: profiling a burst of {options.runs} runs")
        label = f"{system.name}-{workload}"
        with sampled(system.procs.procs, out_dir, label) as files:
            burst = system.run_phase(workload, f"p-{workload}", options.runs, None, "profile")
        found[workload] = {
            "runs_per_s_while_sampled": burst.runs_per_s,
            "processes": {
                name: summarize(path, system.own_code, system.entry_code)
                for name, path in files.items()
            },
        }
    return found


def profile_report(results: dict[str, Any]) -> str:
    lines = []
    for name, result in results.items():
        for workload, found in result.get("profile", {}).items():
            for proc, summary in found["processes"].items():
                if not summary.get("busy_samples"):
                    continue
                busy = summary["busy_samples"]
                lines.append(
                    f"\n{name} {workload} {proc}: {busy} busy samples of {summary['samples']}"
                )
                packages = ", ".join(f"{k} {v}%" for k, v in summary["by_package"][:8])
                lines.append(f"  by package: {packages}")
                for frame, share in summary["by_own_frame"][:8]:
                    lines.append(f"  {share:5.1f}%  {frame}")
    return "\n".join(lines)


def _latency_line(phase: Phase) -> str:
    parts = [
        f"{kind} p50 {_fmt(stats['p50'])} p99 {_fmt(stats['p99'])} ms"
        for kind, stats in phase.latency.items()
    ]
    return "; ".join(parts) or "no latency data"


def _fmt(value: float | int | None, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


HEADER = [
    "system",
    "workload",
    "runs/s",
    "steps/s",
    "tf/x",
    "paced at",
    "queued p50/p99",
    "sched p50/p99",
    "e2e p50/p99",
    "pg xacts/step",
    "db stmts/step",
    "msgs pub+cons/step",
]


def _pair(latency: dict[str, Any], kind: str) -> str:
    if kind not in latency or latency[kind]["p50"] is None:
        return "-"
    return f"{latency[kind]['p50']:.0f}/{latency[kind]['p99']:.0f} ms"


def _row(name: str, burst: dict[str, Any], paced: dict[str, Any], tf: dict[str, Any]) -> list[str]:
    workload = burst["workload"]
    steps = WORKLOADS[workload]
    ratio = "-"
    if name != "tideflow" and tf.get(workload, {}).get("runs_per_s"):
        peer = burst["runs_per_s"]
        ratio = f"{tf[workload]['runs_per_s'] / peer:.2f}" if peer else "n/a"
    latency = paced.get("latency", {})
    cost = burst.get("per_step", {})
    msgs = "-"
    if "published" in cost:
        pub, cons = cost.get("published"), cost.get("consumed")
        msgs = "n/a" if pub is None or cons is None else f"{pub:.2f}+{cons:.2f}"
    stmts = _fmt(cost.get("statements"), 2) if "statements" in cost else "-"
    return [
        name,
        f"{LABELS.get(workload, workload)} ({steps} step{'s' if steps > 1 else ''})",
        _fmt(burst["runs_per_s"]) + ("*" if burst.get("note") else ""),
        _fmt(burst["steps_per_s"]),
        ratio,
        f"{paced['rate']:.0f}/s" if paced.get("rate") else "-",
        _pair(latency, "queued"),
        _pair(latency, "sched"),
        _pair(latency, "e2e"),
        _fmt(cost.get("pg_xacts"), 2),
        stmts,
        msgs,
    ]


def table(results: dict[str, Any], order: Sequence[str]) -> str:
    """One row per system and workload: throughput of a burst, latency at half that rate,
    per-step cost, and tideflow's ratio to the peer; notes below."""
    rows: list[list[str]] = []
    notes: list[str] = []
    tf = {p["workload"]: p for p in results.get("tideflow", {}).get("throughput", [])}
    for name in order:
        system = results.get(name)
        if not system:
            continue
        if system.get("error"):
            notes.append(f"{name}: FAILED: {system['error'].strip()}")
        if system.get("disturbed"):
            notes.append(f"{name}: NOT VALID: {system['disturbed']}")
        paced = {p["workload"]: p for p in system.get("latency", [])}
        for burst in system.get("throughput", []):
            rows.append(_row(name, burst, paced.get(burst["workload"], {}), tf))
            if burst.get("note"):
                notes.append(f"* {name} {burst['workload']}: {burst['note']}")
    notes += flow_control_notes(tf)
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(HEADER))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) for row in rows]
    return "\n".join([*(line.rstrip() for line in lines), *notes])


def flow_control_notes(tf: dict[str, Any]) -> list[str]:
    """Each flow-control workload's throughput over the unconstrained one-step workload's, from
    the same invocation: what the rule costs."""
    base = tf.get("one", {}).get("runs_per_s")
    notes = []
    for workload in ("keyed", "limited", "full"):
        rate = tf.get(workload, {}).get("runs_per_s")
        if base and rate:
            notes.append(f"tideflow {LABELS.get(workload, workload)}: {rate / base:.2f} x one")
    return notes


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, Options]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs, shorter phases (~1 min)")
    parser.add_argument(
        "--runs", type=int, help="runs per workload and system (default 1000, quick 200)"
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset")
    parser.add_argument(
        "--concurrency", type=int, default=10, help="worker concurrency (default 10)"
    )
    parser.add_argument(
        "--latency-seconds", type=float, help="length of a latency phase (default 8, quick 3)"
    )
    parser.add_argument(
        "--phase-timeout", type=float, default=120.0, help="give up on a phase after this"
    )
    parser.add_argument("--tideflow-ingest", choices=("amqp", "http"), default="amqp")
    parser.add_argument(
        "--tideflow-buffered-steps",
        type=int,
        default=None,
        help="the bench functions' Checkpointing(buffered_steps=N) (default: the default, 1)",
    )
    parser.add_argument("--celery-pool", choices=("prefork", "threads"), default="prefork")
    parser.add_argument(
        "--celery-concurrency", type=int, help="default: 2 (prefork) or --concurrency"
    )
    parser.add_argument(
        "--dbos-polling", type=float, default=0.01, help="DBOS queue polling interval (s)"
    )
    parser.add_argument(
        "--pg-settle",
        type=float,
        help="seconds to wait for pg_stat_database to catch up (default 11; quick 0: n/a)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after measuring, sample an extra burst per workload with py-spy",
    )
    parser.add_argument(
        "--preload",
        type=int,
        help="finished runs (with their step and event) written in batches into tideflow's "
        "database before the `full` workload (default 1,000,000; quick 100,000; 0: no `full`)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench databases afterwards")
    parser.add_argument("--json", default=str(BENCH_DIR / "results" / "latest.json"))
    args = parser.parse_args(argv)
    options = Options(
        runs=args.runs or (200 if args.quick else 1000),
        concurrency=args.concurrency,
        latency_seconds=args.latency_seconds or (3.0 if args.quick else 8.0),
        phase_timeout=args.phase_timeout,
        keep=args.keep,
        profile=args.profile,
        pg_settle=args.pg_settle if args.pg_settle is not None else (0.0 if args.quick else 11.0),
        tideflow_ingest=args.tideflow_ingest,
        tideflow_buffered_steps=args.tideflow_buffered_steps,
        celery_pool=args.celery_pool,
        celery_concurrency=args.celery_concurrency,
        dbos_polling_s=args.dbos_polling,
        preload=args.preload
        if args.preload is not None
        else (100_000 if args.quick else 1_000_000),
    )
    return args, options


def run_system(name: str, options: Options, result: dict[str, Any]) -> None:
    """Starts one system, measures it, stops it; fills `result` with its results (as far as
    it got, if interrupted) or its error."""
    system = make_system(name, options)
    log(f"{name}: starting")
    canary: Canary | None = None
    load = load_average()
    phases: list[Phase] = []
    result["description"] = system.description
    try:
        canary = Canary()
        started = time.monotonic()
        system.start()
        log(f"{name}: started in {time.monotonic() - started:.1f}s")
        measure(system, options, phases)
        if options.profile:
            result["profile"] = profile(system, options)
    except (BenchError, OSError, Exception) as exc:  # noqa: BLE001 - reported, next system
        log(f"{name}: failed: {exc}")
        result["error"] = f"{exc}"
        result["traceback"] = traceback.format_exc()
    finally:
        result["config"] = system.config
        result["throughput"] = [p.to_json() for p in phases if p.kind == "throughput"]
        result["latency"] = [p.to_json() for p in phases if p.kind == "latency"]
        try:
            with signals_deferred():
                system.stop()
        except Exception as exc:  # noqa: BLE001 - best effort
            log(f"{name}: stopping failed: {exc}")
    result["load_average"] = [round(load, 2), round(load_average(), 2)]
    disturbed = canary.disturbed() if canary is not None else []
    if canary is not None:
        canary.close()
    if disturbed:
        result["disturbed"] = f"{' and '.join(disturbed)} during the measurement"
        log(f"{name}: WARNING: {result['disturbed']}; its numbers are not valid")


def main(argv: Sequence[str] | None = None) -> int:
    given = list(sys.argv[1:] if argv is None else argv)
    if "--matching" in given:
        # Not a run/s workload: the cost of one matching event as waiting runs grow.
        from matching import main as matching_main

        return matching_main([arg for arg in given if arg != "--matching"])
    if "--retention" in given:
        # The 1-step workload while the sweeper deletes runs past retention, and without.
        from retention import main as retention_main

        return retention_main([arg for arg in given if arg != "--retention"])
    args, options = parse_args(argv)
    names = [n.strip() for n in args.systems.split(",") if n.strip()]
    for name in names:
        if name not in SYSTEMS:
            raise SystemExit(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    started = time.monotonic()
    load = load_average()
    if load > 1.0:
        log(f"WARNING: load average {load:.1f} before starting: other work on this machine")
    results: dict[str, Any] = {}
    try:
        with sigterm_as_interrupt():
            for name in names:
                results[name] = {}
                run_system(name, options, results[name])
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        print(table(results, names))
        return 130
    elapsed = time.monotonic() - started
    print(table(results, names))
    if options.profile:
        print(profile_report(results))
    report = {
        "command": " ".join(["bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "options": dataclasses.asdict(options),
        "seconds": round(elapsed, 1),
        "results": results,
    }
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as out:
        json.dump(report, out, indent=2)
    log(f"done in {elapsed:.0f}s; results in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
