"""The DBOS Transact app of the benchmark, run as its own process: `python dbos_app.py`.
Settings from BENCH_DBOS_URL, BENCH_DBOS_CONCURRENCY and BENCH_DBOS_POLLING_S."""

from __future__ import annotations

import os
import signal
import threading

from dbos import DBOS, DBOSConfig

QUEUE = "bench"
ONE_WORKFLOW = "bench_one"
TEN_WORKFLOW = "bench_ten"


@DBOS.step(name="noop")
def noop() -> None:
    return None


@DBOS.workflow(name=ONE_WORKFLOW)
def one() -> int:
    noop()
    return 1


@DBOS.workflow(name=TEN_WORKFLOW)
def ten() -> int:
    for _ in range(10):
        noop()
    return 10


def main() -> None:
    config: DBOSConfig = {
        "name": "bench",
        "system_database_url": os.environ["BENCH_DBOS_URL"],
        "log_level": "WARNING",
        "max_executor_threads": int(os.environ.get("BENCH_DBOS_THREADS", "64")),
    }
    DBOS(config=config)
    DBOS.launch()
    concurrency = int(os.environ.get("BENCH_DBOS_CONCURRENCY", "10"))
    DBOS.register_queue(
        QUEUE,
        worker_concurrency=concurrency,
        polling_interval_sec=float(os.environ.get("BENCH_DBOS_POLLING_S", "0.01")),
        on_conflict="always_update",
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    print("ready", flush=True)
    stop.wait()
    DBOS.destroy()


if __name__ == "__main__":
    main()
