"""The cluster as separate processes on real PostgreSQL and RabbitMQ: replicas, and faults."""

from __future__ import annotations

import collections
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from cluster import COMPOSE, Cluster, ClusterOf, compose_command
from helpers import eventually

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]


@pytest.fixture
def cluster(cluster_of: ClusterOf) -> Cluster:
    return cluster_of()


def go(n: int, **data: Any) -> dict[str, Any]:
    return {"name": "cluster/go", "data": {"n": n, **data}}


def drive(
    cluster: Cluster, count: int, *, fault: Callable[[], None] | None = None, batch: int = 10
) -> list[str]:
    """Sends `count` events in batches; halfway through, injects `fault` while sending goes on."""
    ids: list[str] = []
    injector: threading.Thread | None = None
    for start in range(0, count, batch):
        if fault is not None and injector is None and start >= count // 3:
            injector = threading.Thread(target=fault, name="fault")
            injector.start()
        ids += cluster.send([go(n) for n in range(start, min(start + batch, count))])
        time.sleep(0.05)
    if injector is not None:
        injector.join()
    return ids


def assert_every_run_completed_once(
    cluster: Cluster, ids: list[str], runs: dict[str, dict[str, Any]]
) -> None:
    assert sorted(run["output"]["n"] for run in runs.values()) == list(range(len(ids)))
    assert {run["status"] for run in runs.values()} == {"Completed"}
    for run in runs.values():
        steps = cluster.api.steps(run["run_id"])
        assert [(s["name"], s["status"]) for s in steps] == [
            ("a", "Completed"),
            ("nap", "Completed"),
            ("b", "Completed"),
        ]
    finished = cluster.api.http.get(
        "/v1/events", params={"name": "tideflow/function.finished", "limit": 1000}
    ).json()["data"]
    per_run = collections.Counter(event["data"]["run_id"] for event in finished)
    run_ids = [run["run_id"] for run in runs.values()]
    assert {run_id: per_run[run_id] for run_id in run_ids} == dict.fromkeys(run_ids, 1)
    assert max(per_run.values()) == 1
    assert all(cluster.all_alive().values()), cluster.all_alive()


def test_the_compose_file_runs_the_commands_these_tests_run() -> None:
    services = COMPOSE["services"]
    assert set(services) >= {"rabbitmq", "postgres", "migrate", "api", "scheduler", "worker"}
    assert compose_command("migrate") == ["migrate"]
    assert compose_command("api") == ["api", "--port", "8288"]
    assert compose_command("scheduler") == ["scheduler"]
    assert compose_command("worker")[:2] == ["worker", "examples.shop:client"]
    assert services["api"]["environment"]["TIDEFLOW_DATABASE_URL"].startswith("postgresql://")
    assert services["api"]["environment"]["TIDEFLOW_BROKER_URL"].startswith("amqp://")


def test_two_schedulers_and_two_workers_run_every_step_once(cluster: Cluster) -> None:
    cluster.start(schedulers=2, workers=2)
    ids = drive(cluster, 150)
    waiting = cluster.send([go(n, wait=True) for n in range(1000, 1010)])
    waiting_runs = [
        eventually(lambda e=e: cluster.api.runs(e), what="waiting runs")[0] for e in waiting
    ]
    eventually(
        lambda: all(
            any(
                s["name"] == "poke" and s["status"] == "Waiting"
                for s in cluster.api.steps(r["run_id"])
            )
            for r in waiting_runs
        ),
        what="runs waiting for their poke",
    )
    cluster.send([{"name": "cluster/poke", "data": {"n": n}} for n in range(1000, 1010)])
    cluster.send([{"name": "cluster/poke", "data": {"n": n}} for n in range(1000, 1010)])

    runs = cluster.wait_for_all(ids)
    poked = cluster.wait_for_all(waiting)

    assert_every_run_completed_once(cluster, ids, runs)
    assert sorted(run["output"]["poked"] for run in poked.values()) == list(range(1000, 1010))
    executions = cluster.body_executions()
    assert set(executions.values()) == {1}, [k for k, v in executions.items() if v > 1]
    assert len(executions) == 2 * (len(ids) + len(waiting))


def test_a_worker_killed_mid_step_loses_its_job_to_another_worker(cluster: Cluster) -> None:
    cluster.start(schedulers=1, workers=2)
    (event_id,) = cluster.send([go(0, slow_s=4)])
    run = eventually(lambda: cluster.api.runs(event_id), what="the run")[0]
    log = cluster.dir / "bodies.log"
    line = eventually(
        lambda: (
            log.exists()
            and [x for x in log.read_text().splitlines() if x.startswith(f"{run['run_id']} a")]
        ),
        what="slow step to start",
    )[0]
    pid = int(line.split()[2])
    (victim,) = [w for w in cluster.workers if w.popen.pid == pid]

    victim.kill()
    cluster.processes.remove(victim)
    runs = cluster.wait_for_all([event_id], timeout_s=60)

    assert runs[event_id]["status"] == "Completed"
    # The lapsed lease was seen, and the job dispatched again, by the scheduler.
    assert cluster.metric("scheduler-0", "tideflow_scheduler_jobs_redispatched_total") >= 1
    attempts = [
        x.split() for x in log.read_text().splitlines() if x.startswith(f"{run['run_id']} a")
    ]
    assert len(attempts) == 2
    assert int(attempts[1][2]) != pid


def test_a_scheduler_killed_under_load_loses_nothing(cluster: Cluster) -> None:
    cluster.start(schedulers=2, workers=2)

    def kill_a_scheduler() -> None:
        time.sleep(0.5)
        victim = cluster.schedulers[0]
        victim.kill()
        cluster.processes.remove(victim)

    ids = drive(cluster, 200, fault=kill_a_scheduler)
    runs = cluster.wait_for_all(ids)

    assert_every_run_completed_once(cluster, ids, runs)


def test_rabbitmq_restarted_under_load_loses_nothing(cluster: Cluster) -> None:
    cluster.start(schedulers=2, workers=2)

    def restart_rabbitmq() -> None:
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=60)
        time.sleep(2)
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)

    ids = drive(cluster, 200, fault=restart_rabbitmq)
    runs = cluster.wait_for_all(ids, timeout_s=120)

    assert_every_run_completed_once(cluster, ids, runs)
    # Every process re-opens its connections and counts it. A process whose backoff had grown
    # may still be reconnecting when the other replicas have finished every run, so wait.
    for process in ("scheduler-0", "scheduler-1", "worker-0", "worker-1"):
        eventually(
            lambda p=process: cluster.metric(p, "tideflow_broker_reconnects_total{") > 0,
            what=f"{process} to count its broker reconnect",
        )


def test_postgres_restarted_under_load_loses_nothing(cluster: Cluster) -> None:
    cluster.start(schedulers=2, workers=2)

    def restart_postgres() -> None:
        version = subprocess.run(
            ["ls", "/etc/postgresql"], capture_output=True, text=True, check=True
        ).stdout.split()[0]
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
            check=True,
            capture_output=True,
            timeout=120,
        )

    ids = drive(cluster, 200, fault=restart_postgres)
    runs = cluster.wait_for_all(ids, timeout_s=120)

    assert_every_run_completed_once(cluster, ids, runs)
