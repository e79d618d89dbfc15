"""The matching bench (tideflow only): what one matching event costs when N runs wait on its
event name, for N = 1,000, 10,000 and 100,000.

    .venv/bin/python bench/matching.py [--quick] [--sizes 1000,10000,100000] [--keep]
    .venv/bin/python bench/run.py --matching [--quick]

Two populations, each keyed by id (`event.data.id == async.data.id`): runs waiting in
`step.wait_for_event("paid", event="bench/paid", ...)`, and runs listening for cancel
(`cancel=[Cancel("bench/stop", ...)]`). Each is seeded straight into a fresh PostgreSQL
database (`tideflow_bench_matching`) in a few statements, in the store's own format (checked:
every measured event must resolve or cancel exactly its run); then events that each match one
run go through the scheduler's event path in-process (`Scheduler.process_events`: the store's
candidate lookup, planning, the transaction that applies it), first one event per micro-batch,
then 50 per micro-batch. Reported per matching event: wall time and store statements (the
`tideflow_store_statements_total` counter). A third population, waits whose expression is not
an equality (`event.data.id + 0 == async.data.id`), shows the fallback: every wait of the name
evaluated, so its cost grows with N (measured up to 10,000 only).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import pathlib
import random
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from tideflow import Settings
from tideflow._core import matching
from tideflow.broker import create_broker
from tideflow.scheduler import Scheduler
from tideflow.store import create_store
from tideflow.store import metrics as store_metrics
from tideflow.store import models as m

BENCH_DIR = pathlib.Path(__file__).resolve().parent
DATABASE = "tideflow_bench_matching"
APP = "bench-matching"
KEYED = "event.data.id == async.data.id"
UNINDEXED = "event.data.id + 0 == async.data.id"
FALLBACK_MAX = 10_000
BATCH = 50


@dataclasses.dataclass(frozen=True)
class Population:
    name: str
    function_id: str
    kind: str
    event_name: str
    if_exp: str
    step_hash: str


POPULATIONS = (
    Population(
        "waiting (wait_for_event)", "bench-waiter", m.WAIT_EVENT, "bench/paid", KEYED, "paid"
    ),
    Population(
        "listening (cancel)", "bench-listener", m.WAIT_CANCEL, "bench/stop", KEYED, "cancel:0"
    ),
    Population(
        "waiting, unindexed expression",
        "bench-fallback",
        m.WAIT_EVENT,
        "bench/late",
        UNINDEXED,
        "paid",
    ),
)


def pg_url(database: str) -> str:
    # As _harness.pg_url, without the peers' imports: this bench needs tideflow only.
    return f"postgresql://postgres@127.0.0.1:5432/{database}"


def recreate_database(name: str) -> None:
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    with psycopg.connect(pg_url("postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def function_configs() -> list[dict[str, Any]]:
    base = {"app_id": APP, "retries": 0, "triggers": [{"event": "bench/start"}]}
    return [
        {**base, "function_id": "bench-waiter"},
        {
            **base,
            "function_id": "bench-listener",
            "cancel": [{"event": "bench/stop", "if_exp": KEYED, "timeout_ms": None}],
        },
        {**base, "function_id": "bench-fallback"},
    ]


def seed(conn: psycopg.Connection[Any], population: Population, first: int, last: int) -> None:
    """Runs `first`..`last` of the population, each waiting (or listening) keyed by its id."""
    indexed = matching.index_of(population.if_exp)
    path = matching.path_text(indexed.async_path) if indexed else None
    # The key format of `matching.key_of` for an int, built in SQL; checked below.
    key_sql = "'[\"i\", ' || g || ']'" if indexed else "NULL"
    prefix = population.function_id
    params = {"first": first, "last": last, "fn": population.function_id, "app": APP}
    conn.execute(
        f"""
        INSERT INTO runs (run_id, function_id, app_id, event_id, status, events, queued_at,
                          started_at, order_at)
        SELECT '{prefix}-' || g, %(fn)s, %(app)s, 'evt-{prefix}-' || g, 'Running',
               '[{{"name": "bench/start", "data": {{"id": ' || g || '}}}}]', 0, 0, 0
        FROM generate_series(%(first)s::int, %(last)s::int) AS g
        """,
        params,
    )
    if population.kind == m.WAIT_EVENT:
        conn.execute(
            f"""
            INSERT INTO steps (run_id, hash, name, op, status, started_at)
            SELECT '{prefix}-' || g, '{population.step_hash}', 'paid', 'WaitForEvent',
                   'Waiting', 0
            FROM generate_series(%(first)s::int, %(last)s::int) AS g
            """,
            params,
        )
    conn.execute(
        f"""
        INSERT INTO waits (run_id, step_hash, kind, event_name, if_exp, run_event, match_path,
                           match_key)
        SELECT '{prefix}-' || g, %(step)s, %(kind)s, %(event_name)s, %(if_exp)s,
               '{{"name": "bench/start", "data": {{"id": ' || g || '}}}}', %(path)s, {key_sql}
        FROM generate_series(%(first)s::int, %(last)s::int) AS g
        """,
        {
            **params,
            "step": population.step_hash,
            "kind": population.kind,
            "event_name": population.event_name,
            "if_exp": population.if_exp,
            "path": path,
        },
    )
    if indexed:
        row = conn.execute(
            "SELECT match_key FROM waits WHERE run_id = %s", (f"{prefix}-{first}",)
        ).fetchone()
        if row is None or row[0] != matching.key_of(first):
            raise SystemExit(f"seeded key {row} is not the store's {matching.key_of(first)}")


def statements() -> float:
    return sum(
        sample.value
        for metric in store_metrics.STATEMENTS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def events_for(population: Population, ids: Sequence[int]) -> list[m.EventRecord]:
    now = int(time.time() * 1000)
    return [
        m.EventRecord(
            internal_id=f"evt-{population.function_id}-match-{n}-{time.monotonic_ns()}",
            name=population.event_name,
            data={"id": n},
            ts=now,
            received_at=now,
        )
        for n in ids
    ]


async def measure(
    scheduler: Scheduler, population: Population, ids: list[int], per_batch: int
) -> tuple[float, float]:
    """(ms, statements) per matching event, `per_batch` events per micro-batch."""
    events = events_for(population, ids)
    before, started = statements(), time.perf_counter()
    for start in range(0, len(events), per_batch):
        await scheduler.process_events(events[start : start + per_batch])
    seconds = time.perf_counter() - started
    return seconds * 1000 / len(events), (statements() - before) / len(events)


def check_matched(conn: psycopg.Connection[Any], population: Population, ids: list[int]) -> None:
    run_ids = [f"{population.function_id}-{n}" for n in ids]
    if population.kind == m.WAIT_CANCEL:
        query = "SELECT count(*) FROM runs WHERE run_id = ANY(%s) AND status = 'Cancelled'"
    else:
        query = "SELECT count(*) FROM steps WHERE run_id = ANY(%s) AND status = 'Completed'"
    row = conn.execute(query, (run_ids,)).fetchone()
    matched = row[0] if row else 0
    if matched != len(ids):
        raise SystemExit(f"{population.name}: {matched} of {len(ids)} events matched their run")


async def bench(sizes: list[int], events: int, keep: bool) -> list[dict[str, Any]]:
    recreate_database(DATABASE)
    url = pg_url(DATABASE)
    store = create_store(url)
    await store.open()
    await store.migrate()
    await store.register_functions(APP, function_configs(), int(time.time() * 1000))
    broker = create_broker("memory://")
    await broker.connect()
    scheduler = Scheduler(store=store, broker=broker, settings=Settings(database_url=url))
    await scheduler._registry.refresh(store)
    rows: list[dict[str, Any]] = []
    rng = random.Random(7)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            seeded = dict.fromkeys(population.name for population in POPULATIONS)
            used: dict[str, set[int]] = {population.name: set() for population in POPULATIONS}
            for size in sizes:
                for population in POPULATIONS:
                    if population.if_exp == UNINDEXED and size > FALLBACK_MAX:
                        continue
                    first = (seeded[population.name] or 0) + 1
                    seed(conn, population, first, size)
                    seeded[population.name] = size
                    # As a long-lived database is: statistics, visibility map and hint bits set.
                    conn.execute("VACUUM ANALYZE runs, steps, waits")
                    count = events if population.if_exp != UNINDEXED else max(3, events // 40)
                    # Runs matched earlier have ended: each event matches a run still waiting.
                    free = sorted(set(range(1, size + 1)) - used[population.name])
                    chosen = rng.sample(free, 2 * count)
                    used[population.name].update(chosen)
                    single = await measure(scheduler, population, chosen[:count], 1)
                    batched = await measure(scheduler, population, chosen[count:], BATCH)
                    check_matched(conn, population, chosen)
                    rows.append(
                        {
                            "population": population.name,
                            "waiting": size,
                            "events": 2 * count,
                            "ms_per_event": round(single[0], 2),
                            "statements_per_event": round(single[1], 2),
                            "batched_ms_per_event": round(batched[0], 2),
                            "batched_statements_per_event": round(batched[1], 2),
                        }
                    )
                    print(line(rows[-1]), file=sys.stderr, flush=True)
    finally:
        await broker.close()
        await store.close()
        if not keep:
            drop_database(DATABASE)
    return rows


HEADER = (
    f"{'population':<32} {'waiting':>8} {'ms/event':>9} {'stmts/event':>12} "
    f"{'ms/event@50':>12} {'stmts/event@50':>15}"
)


def line(row: dict[str, Any]) -> str:
    return (
        f"{row['population']:<32} {row['waiting']:>8,} {row['ms_per_event']:>9.2f} "
        f"{row['statements_per_event']:>12.2f} {row['batched_ms_per_event']:>12.2f} "
        f"{row['batched_statements_per_event']:>15.2f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer events; 100,000 skipped")
    parser.add_argument("--sizes", help="comma-separated numbers of waiting runs")
    parser.add_argument("--events", type=int, help="matching events per measure (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--json", default=str(BENCH_DIR / "results" / "matching.json"))
    args = parser.parse_args(argv)
    default_sizes = "1000,10000" if args.quick else "1000,10000,100000"
    sizes = sorted(int(size) for size in (args.sizes or default_sizes).split(","))
    events = args.events or (50 if args.quick else 200)
    rows = asyncio.run(bench(sizes, events, args.keep))
    print(HEADER)
    for row in rows:
        print(line(row))
    with open(args.json, "w") as out:
        json.dump({"rows": rows, "sizes": sizes, "events": events}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
