"""Debounce and batching across two scheduler processes on PostgreSQL and RabbitMQ: events of
one key land on either replica while either fires the key's timer."""

from __future__ import annotations

import time
from typing import Any

import pytest
from cluster import Cluster, ClusterOf
from helpers import eventually

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.slow,
    pytest.mark.timeout(180),
]

APP = """
import tideflow

client = tideflow.Client(app_id="holds")


@client.create_function(
    fn_id="batched",
    trigger=tideflow.TriggerEvent(event="holds/item"),
    batch_events=tideflow.Batch(max_size=4, timeout="1s", key="event.data.k"),
)
def batched(ctx):
    return {"ids": [event.id for event in ctx.events], "k": ctx.event.data["k"]}


@client.create_function(
    fn_id="debounced",
    trigger=tideflow.TriggerEvent(event="holds/typed"),
    debounce=tideflow.Debounce(period="1s", key="event.data.k"),
)
def debounced(ctx):
    return {"id": ctx.event.id, "n": ctx.event.data["n"], "count": len(ctx.events)}
"""


@pytest.fixture
def cluster(cluster_of: ClusterOf) -> Cluster:
    running = cluster_of(app=APP, known_function="holds-batched")
    running.start(schedulers=2, workers=1)
    return running


def ended_runs(cluster: Cluster, ids: list[str], count: int) -> list[dict[str, Any]]:
    """The `count` runs these events started, once all have ended."""

    def ended() -> list[dict[str, Any]] | None:
        runs = [run for event_id in ids for run in cluster.api.runs(event_id)]
        if len(runs) == count and all(r["status"] == "Completed" for r in runs):
            return runs
        assert len(runs) <= count, [run["event_id"] for run in runs]
        return None

    found: list[dict[str, Any]] = eventually(ended, what=f"{count} runs", timeout_s=60)
    return found


def test_two_schedulers_put_every_batched_event_in_exactly_one_run(cluster: Cluster) -> None:
    ids: list[str] = []
    for round_ in range(10):
        # Small posts, so that the replicas share each key's events.
        events = [{"name": "holds/item", "data": {"k": k, "r": round_}} for k in "abc"]
        ids += cluster.send(events[:2])
        ids += cluster.send(events[2:])
        time.sleep(0.03)

    # 10 events per key: two full batches of 4 each, then 2 after the timeout.
    runs = ended_runs(cluster, ids, 9)

    batched = [event_id for run in runs for event_id in run["output"]["ids"]]
    assert sorted(batched) == sorted(ids)
    sizes = sorted((run["output"]["k"], len(run["output"]["ids"])) for run in runs)
    assert sizes == [(k, size) for k in "abc" for size in (2, 4, 4)]
    assert all(run["event_id"] == run["output"]["ids"][0] for run in runs)
    # Both replicas took part (RabbitMQ hands the events queue's messages out in turn).
    for name in ("scheduler-0", "scheduler-1"):
        assert cluster.metric(name, "tideflow_scheduler_events_total") > 0, name


def test_two_schedulers_start_one_run_per_burst_with_its_last_event(cluster: Cluster) -> None:
    last: dict[str, str] = {}
    ids: list[str] = []
    for n in range(6):
        for k in "abcd":
            (event_id,) = cluster.send([{"name": "holds/typed", "data": {"k": k, "n": n}}])
            ids.append(event_id)
            last[k] = event_id
        time.sleep(0.1)

    runs = ended_runs(cluster, ids, 4)

    assert sorted(run["event_id"] for run in runs) == sorted(last.values())
    assert all(run["output"]["n"] == 5 and run["output"]["count"] == 1 for run in runs)
