"""Cancelling through the API on a real cluster: the API only asks, and whichever of two
scheduler processes is alive carries the cancellation out, also when one is killed mid-way."""

from __future__ import annotations

import datetime
import time
from typing import Any

import pytest
from cluster import Cluster, ClusterOf
from helpers import eventually

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]
RUNS = 700  # two batches of a bulk cancellation


def rfc3339(moment: datetime.datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def runs_of(cluster: Cluster, event_ids: list[str]) -> dict[str, dict[str, Any]]:
    return {event_id: cluster.api.runs(event_id)[0] for event_id in event_ids}


def test_api_cancellations_are_carried_out_by_the_schedulers_alive(cluster_of: ClusterOf) -> None:
    cluster = cluster_of()
    cluster.start(schedulers=2, workers=1)
    since = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    event_ids = cluster.send(
        [{"name": "cluster/go", "data": {"n": n, "nap": "1h"}} for n in range(RUNS)]
    )
    # Each run has run its first step, and sleeps.
    eventually(lambda: len(cluster.body_executions()) == RUNS, timeout_s=120, what="runs asleep")
    runs = runs_of(cluster, event_ids)
    first = runs[event_ids[0]]["run_id"]

    one = cluster.api.http.delete(f"/v1/runs/{first}")
    asked = cluster.api.http.post(
        "/v1/cancellations",
        json={
            "function_id": "cluster-flow",
            "started_after": rfc3339(since),
            "started_before": rfc3339(datetime.datetime.now(datetime.UTC)),
        },
    )
    cluster.schedulers[0].kill()  # whatever it held, the other replica takes over
    cancellation_id = asked.json()["id"]

    def completed() -> dict[str, Any] | None:
        data: dict[str, Any] = cluster.api.http.get(f"/v1/cancellations/{cancellation_id}").json()[
            "data"
        ]
        return data if data["status"] == "Completed" else None

    progress = eventually(completed, timeout_s=120, what="the bulk cancellation to complete")
    time.sleep(1)  # late duplicates, if any, would show by now
    finals = runs_of(cluster, event_ids)
    events = cluster.api.http.get(
        "/v1/events", params={"name": "tideflow/function.cancelled", "limit": "1000"}
    ).json()["data"]

    assert one.status_code == 200
    assert one.json()["data"]["status"] == "Cancelled"
    assert asked.status_code == 202
    assert progress["cancelled"] == RUNS - 1
    assert {run["status"] for run in finals.values()} == {"Cancelled"}
    assert sorted(event["data"]["run_id"] for event in events) == sorted(
        run["run_id"] for run in finals.values()
    )
    causes = [event["data"]["error"]["message"].rsplit(" ", 1)[1] for event in events]
    assert sorted(causes) == ["(api)"] + ["(bulk)"] * (RUNS - 1)
