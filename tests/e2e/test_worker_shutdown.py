"""A worker told to stop (SIGTERM) takes no new job, lets its running steps finish within
`TIDEFLOW_SHUTDOWN_GRACE_S`, and abandons what still runs after that: the abandoned step's
lease lapses and it runs elsewhere. On a PostgreSQL + RabbitMQ cluster."""

from __future__ import annotations

import collections
import signal
import textwrap
import time

import pytest
from cluster import Cluster, ClusterOf
from helpers import eventually

APP = textwrap.dedent(
    """
    import os, time
    import tideflow

    client = tideflow.Client(app_id="drain")
    LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bodies.log")


    def body(run_id, name, seconds):
        with open(LOG, "a") as log:
            log.write(f"{run_id} {name} start\\n")
        time.sleep(seconds)
        with open(LOG, "a") as log:
            log.write(f"{run_id} {name} end\\n")
        return name


    @client.create_function(fn_id="slow", trigger=tideflow.TriggerEvent(event="drain/go"))
    def slow(ctx):
        first = ctx.step.run("slow", body, ctx.run_id, "slow", ctx.event.data["seconds"])
        then = ctx.step.run("then", body, ctx.run_id, "then", 0)
        return [first, then]
    """
)


@pytest.fixture
def cluster(cluster_of: ClusterOf) -> Cluster:
    running = cluster_of(lease_s=2, app=APP, known_function="drain-slow")
    return running


def _lines(cluster: Cluster) -> list[str]:
    log = cluster.dir / "bodies.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("grace_s", "seconds", "slow_runs"),
    [
        # The step ends within the grace period: the worker waits for it, records it, exits.
        ("10", 2, 1),
        # It does not: the worker exits without it; the step runs again on another worker.
        ("1", 5, 2),
    ],
)
def test_a_stopping_worker_drains_its_steps_within_the_grace_period(
    cluster: Cluster, grace_s: str, seconds: int, slow_runs: int
) -> None:
    cluster.env["TIDEFLOW_SHUTDOWN_GRACE_S"] = grace_s
    cluster.start(schedulers=1, workers=1)
    (event_id,) = cluster.send([{"name": "drain/go", "data": {"seconds": seconds}}])
    run_id = eventually(lambda: cluster.api.runs(event_id), what="the run")[0]["run_id"]
    eventually(lambda: f"{run_id} slow start" in _lines(cluster), what="the slow step to start")

    # When the worker is told to stop mid-step
    worker = cluster.workers[0]
    stopped_at = time.monotonic()
    worker.popen.send_signal(signal.SIGTERM)
    exit_code = worker.popen.wait(timeout=30)
    stopped_after_s = time.monotonic() - stopped_at
    finished_before_exit = f"{run_id} slow end" in _lines(cluster)
    cluster.start_worker()
    run = eventually(
        lambda: cluster.api.run(run_id)["status"] == "Completed" and cluster.api.run(run_id),
        timeout_s=60,
        what="the run to complete on the other worker",
    )

    # Then the step ran to its end before the exit, or was abandoned and ran again elsewhere
    starts = collections.Counter(
        line.split()[1] for line in _lines(cluster) if line.endswith("start")
    )
    assert exit_code == 0
    assert finished_before_exit is (slow_runs == 1)
    assert stopped_after_s < float(grace_s) + 8
    assert run["output"] == ["slow", "then"]
    assert starts == {"slow": slow_runs, "then": 1}
