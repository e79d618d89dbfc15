"""Concurrency limits on a real cluster: two scheduler replicas admitting into the same pools,
two worker processes executing, and a worker killed mid-step."""

from __future__ import annotations

import textwrap
import time

import pytest
from cluster import Cluster, ClusterOf
from helpers import eventually

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]

APP = textwrap.dedent(
    """
    import os, time
    import tideflow

    client = tideflow.Client(app_id="limits")
    SPANS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spans.log")


    def body(label, seconds):
        # One line when the body starts and one when it ends, from whichever worker runs it.
        with open(SPANS, "a") as log:
            log.write(f"start {label} {time.time()} {os.getpid()}\\n")
        time.sleep(seconds)
        with open(SPANS, "a") as log:
            log.write(f"end {label} {time.time()} {os.getpid()}\\n")
        return label


    @client.create_function(
        fn_id="limited", trigger=tideflow.TriggerEvent(event="limits/go"), concurrency=2
    )
    def limited(ctx):
        n = ctx.event.data["n"]
        return [ctx.step.run(f"s{i}", body, f"{n}-s{i}", ctx.event.data["seconds"]) for i in range(3)]
    """
)


@pytest.fixture
def cluster(cluster_of: ClusterOf) -> Cluster:
    running = cluster_of(app=APP, known_function="limits-limited", lease_s=2)
    return running


def spans(cluster: Cluster, killed_at: float | None = None) -> list[tuple[str, float, float]]:
    """Each body execution as (label, start, end); one that never ended (its worker was
    killed) ends at `killed_at`."""
    starts: dict[tuple[str, str], float] = {}
    ended: list[tuple[str, float, float]] = []
    for line in (cluster.dir / "spans.log").read_text().splitlines():
        kind, label, moment, pid = line.split()
        if kind == "start":
            starts[(label, pid)] = float(moment)
        else:
            ended.append((label, starts.pop((label, pid)), float(moment)))
    assert killed_at is not None or not starts, f"bodies that never ended: {starts}"
    return ended + [(label, start, killed_at or start) for (label, _), start in starts.items()]


def peak(executions: list[tuple[str, float, float]]) -> int:
    edges = sorted(edge for _, start, end in executions for edge in ((start, 1), (end, -1)))
    running = highest = 0
    for _, change in edges:
        running += change
        highest = max(highest, running)
    return highest


def test_two_schedulers_and_two_workers_keep_the_limit_exactly(cluster: Cluster) -> None:
    cluster.start(schedulers=2, workers=2)

    ids = cluster.send([{"name": "limits/go", "data": {"n": n, "seconds": 0.1}} for n in range(10)])
    runs = cluster.wait_for_all(ids)

    assert {run["status"] for run in runs.values()} == {"Completed"}
    executions = spans(cluster)
    assert len(executions) == 30
    assert peak(executions) == 2
    assert (
        cluster.metric("scheduler-0", "tideflow_scheduler_jobs_admitted_total{")
        + cluster.metric("scheduler-1", "tideflow_scheduler_jobs_admitted_total{")
        >= 10
    )


def test_a_killed_worker_frees_its_slot_after_its_lease_and_never_before(
    cluster: Cluster,
) -> None:
    cluster.start(schedulers=2, workers=1)
    (victim,) = cluster.workers
    # Long enough a step for the worker to be killed in the middle of it.
    (slow,) = cluster.send([{"name": "limits/go", "data": {"n": 0, "seconds": 4}}])
    eventually(lambda: (cluster.dir / "spans.log").exists(), what="the slow step to start")
    others = cluster.send(
        [{"name": "limits/go", "data": {"n": n, "seconds": 0.2}} for n in range(1, 4)]
    )
    time.sleep(0.5)
    victim.kill()
    killed_at = time.time()
    cluster.start_worker()

    runs = cluster.wait_for_all([slow, *others], timeout_s=120)

    assert {run["status"] for run in runs.values()} == {"Completed"}
    executions = spans(cluster, killed_at=killed_at)
    first, again = sorted((e for e in executions if e[0] == "0-s0"), key=lambda e: e[1])
    assert again[1] > killed_at, "the killed step ran again, after the kill"
    # Its job held its slot from the first start to the end of the second execution: the dead
    # worker's slot was not handed to another run, and with it the limit of 2 held throughout.
    held = ("0-s0", first[1], again[2])
    others_ran = [e for e in executions if e[0] != "0-s0"]
    assert peak([held, *others_ran]) == 2
