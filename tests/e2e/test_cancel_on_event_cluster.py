"""Cancel on event on a real cluster: two scheduler replicas share the cancel events, each run
whose key matches is cancelled exactly once, and the others sleep on."""

from __future__ import annotations

import textwrap

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
    import tideflow

    client = tideflow.Client(app_id="listen")


    @client.create_function(
        fn_id="sleeper",
        trigger=tideflow.TriggerEvent(event="listen/go"),
        cancel=[tideflow.Cancel(event="listen/stop", if_exp="event.data.id == async.data.id")],
    )
    def sleeper(ctx):
        ctx.step.sleep("nap", "60s")
        return ctx.event.data["id"]
    """
)
RUNS = 20


@pytest.fixture
def cluster(cluster_of: ClusterOf) -> Cluster:
    running = cluster_of(app=APP, known_function="listen-sleeper")
    return running


def test_two_schedulers_cancel_each_matching_run_once_and_no_other(cluster: Cluster) -> None:
    cluster.start(schedulers=2, workers=2)
    started = cluster.send([{"name": "listen/go", "data": {"id": n}} for n in range(RUNS)])

    def sleeping() -> list[str] | None:
        run_ids = []
        for event_id in started:
            runs = cluster.api.runs(event_id)
            if not runs or not any(
                s["status"] == "Waiting" for s in cluster.api.steps(runs[0]["run_id"])
            ):
                return None
            run_ids.append(runs[0]["run_id"])
        return run_ids

    run_ids = eventually(sleeping, timeout_s=60, what="every run to sleep")
    # Each stop twice, in separate requests: the replicas share them, and a run ends once.
    stops = [{"name": "listen/stop", "data": {"id": n}} for n in range(0, RUNS, 2)]
    cluster.send(stops)
    cluster.send(stops)

    def cancelled() -> list[dict[str, object]] | None:
        runs = [cluster.api.run(run_id) for run_id in run_ids]
        return runs if all(r["status"] == "Cancelled" for r in runs[::2]) else None

    runs = eventually(cancelled, timeout_s=60, what="the even runs to be cancelled")
    notices = cluster.api.http.get(
        "/v1/events", params={"name": "tideflow/function.cancelled", "limit": 100}
    ).json()["data"]

    assert [r["status"] for r in runs] == ["Cancelled", "Running"] * (RUNS // 2)
    assert sorted(n["data"]["run_id"] for n in notices) == sorted(run_ids[::2])
