"""A cron function on a real cluster ticks once a minute, exactly once per tick, across a
scheduler killed with kill -9."""

from __future__ import annotations

import itertools
import textwrap
import time
from typing import Any

import pytest
from cluster import Cluster, ClusterOf
from helpers import eventually

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.slow,
    pytest.mark.timeout(300),
]

APP = textwrap.dedent(
    """
    import tideflow

    client = tideflow.Client(app_id="clock")


    @client.create_function(fn_id="minutely", trigger=tideflow.TriggerCron(cron="* * * * *"))
    def minutely(ctx):
        return ctx.event.ts
    """
)


@pytest.fixture
def cluster(cluster_of: ClusterOf) -> Cluster:
    running = cluster_of(app=APP, known_function="clock-minutely", lease_s=2)
    return running


def ticks(cluster: Cluster) -> list[dict[str, Any]]:
    answer = cluster.api.http.get(
        "/v1/events", params={"name": "tideflow/scheduled.timer", "limit": 100}
    )
    return sorted(answer.json()["data"], key=lambda event: event["ts"])


def test_each_tick_starts_one_run_across_a_scheduler_killed(cluster: Cluster) -> None:
    cluster.start(schedulers=2, workers=1)
    eventually(lambda: ticks(cluster), timeout_s=75, interval_s=0.5, what="a first tick")
    victim = cluster.schedulers[0]
    victim.kill()
    cluster.processes.remove(victim)
    killed_at = time.time()

    def three_ticks() -> list[dict[str, Any]] | None:
        found = ticks(cluster)
        return found if len(found) >= 3 else None

    seen = eventually(
        three_ticks,
        timeout_s=150,
        interval_s=0.5,
        what="two more ticks after the kill",
    )

    moments = [event["ts"] for event in seen]
    assert moments[-1] / 1000 > killed_at, "a tick came after the kill"
    # One event a minute, on the minute: none doubled, none lost.
    assert all(ms % 60_000 == 0 for ms in moments)
    assert [b - a for a, b in itertools.pairwise(moments)] == [60_000] * (len(moments) - 1)
    for event in seen:
        runs = eventually(
            lambda e=event: [
                r for r in cluster.api.runs(e["internal_id"]) if r["status"] == "Completed"
            ],
            what="the tick's run to complete",
        )
        assert len(runs) == 1
        assert runs[0]["output"] == event["ts"]
