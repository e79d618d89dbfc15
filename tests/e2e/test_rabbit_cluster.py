"""A tideflow cluster on a three-node RabbitMQ cluster (quorum queues): the node that leads the
work queue is killed under load, and every run still completes, none twice."""

from __future__ import annotations

import collections
import pathlib
import sys

import pytest
from cluster import Cluster
from helpers import FAILED
from rabbit_cluster import RabbitCluster
from test_cluster import assert_every_run_completed_once, drive

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

JOBS_QUEUE = "tideflow.jobs.cluster"
RUNS = 150


def test_losing_the_node_that_leads_the_work_queue_loses_no_run_and_runs_none_twice(
    tmp_path: pathlib.Path,
    postgres_url: str,
    request: pytest.FixtureRequest,
    figures: list[str],
) -> None:
    with RabbitCluster(tmp_path / "rabbit") as rabbit:
        (tmp_path / "app").mkdir()
        # Every process is given all three nodes, and moves to another when its node is lost.
        cluster = Cluster(
            tmp_path / "app", database_url=postgres_url, broker_url=",".join(rabbit.urls)
        )
        try:
            cluster.start(schedulers=2, workers=2)
            durable = {
                name: kind
                for name, kind in rabbit.queue_types().items()
                if not name.startswith("tideflow.subscriber.")
            }
            assert JOBS_QUEUE in durable
            assert set(durable.values()) == {"quorum"}, durable

            killed: list[str] = []

            def kill_the_leader() -> None:
                leader = rabbit.leader(JOBS_QUEUE)
                killed.append(leader.name)
                rabbit.kill(leader)

            ids = drive(cluster, RUNS, fault=kill_the_leader)
            try:
                runs = cluster.wait_for_all(ids, timeout_s=150)
            finally:
                ended = _ended(cluster, ids)
                executions = cluster.body_executions()
                figures.append(
                    f"RabbitMQ node leading {JOBS_QUEUE} killed (SIGKILL) under load, 3-node "
                    f"cluster ({killed}): "
                    f"{len(ids)} runs, {len(ids) - ended['once']} lost or unfinished, "
                    f"{ended['twice']} duplicated runs; step bodies run again after the loss: "
                    f"{sum(n - 1 for n in executions.values() if n > 1)}"
                )
            assert killed
            assert len(rabbit.running()) == 2
            # The queue lives on: the two nodes left elected a leader of their own.
            assert rabbit.leader(JOBS_QUEUE).name not in killed
            assert_every_run_completed_once(cluster, ids, runs)
        finally:
            cluster.stop()
            if request.node.stash.get(FAILED, False):
                sys.stderr.write(cluster.logs())


def _ended(cluster: Cluster, ids: list[str]) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for event_id in ids:
        try:
            found = cluster.api.runs(event_id)
        except Exception:  # noqa: BLE001 (figures only: the assertions say what failed)
            continue
        finished = [run for run in found if run["status"] == "Completed"]
        if len(finished) == 1:
            counts["once"] += 1
        elif len(finished) > 1:
            counts["twice"] += 1
    return counts
