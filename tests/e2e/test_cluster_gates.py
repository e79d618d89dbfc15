"""Gates across scheduler replicas: two scheduler processes sharing a burst of rate-limited
events start exactly the limit of runs per key."""

from __future__ import annotations

import asyncio
import collections
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cluster import Cluster, ClusterOf
from tideflow.store import create_store

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.rabbitmq,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]

LIMIT = 5
KEYS = "abcd"
EVENTS_PER_KEY = 40

APP = f"""
import tideflow

client = tideflow.Client(app_id="cluster")


@client.create_function(
    fn_id="limited",
    trigger=tideflow.TriggerEvent(event="cluster/limited"),
    rate_limit=tideflow.RateLimit(limit={LIMIT}, period="60s", key="event.data.key"),
)
def limited(ctx):
    return ctx.event.data
"""


@pytest.fixture
def cluster(cluster_of: ClusterOf) -> Cluster:
    running = cluster_of(app=APP, known_function="cluster-limited")
    return running


async def decided(database_url: str, event_ids: list[str]) -> dict[str, str]:
    """Each event's fate once every one has been processed: its run's key, or its refusal."""
    store = create_store(database_url)
    await store.open()
    try:
        deadline = time.monotonic() + 120
        while True:
            fates: dict[str, str] = {}
            for event_id in event_ids:
                runs = await store.runs_for_event(event_id)
                if runs:
                    fates[event_id] = "run:" + runs[0].events[0]["data"]["key"]
                elif refusals := await store.run_refusals(event_id):
                    fates[event_id] = next(iter(refusals.values()))
            if len(fates) == len(event_ids) or time.monotonic() > deadline:
                return fates
            await asyncio.sleep(0.5)
    finally:
        await store.close()


def test_two_schedulers_sharing_a_burst_start_exactly_the_limit_per_key(
    cluster: Cluster, postgres_url: str
) -> None:
    cluster.start(schedulers=2, workers=1)
    # Many small requests at once, so that both schedulers get events of every key.
    requests = [
        [{"name": "cluster/limited", "data": {"key": key, "n": n}}]
        for n in range(EVENTS_PER_KEY)
        for key in KEYS
    ]
    with ThreadPoolExecutor(8) as pool:
        ids = [event_id for sent in pool.map(cluster.send, requests) for event_id in sent]

    fates = asyncio.run(decided(postgres_url, ids))

    counts = collections.Counter(fates.values())
    assert counts == {
        **{f"run:{key}": LIMIT for key in KEYS},
        "rate_limited": len(ids) - LIMIT * len(KEYS),
    }
    processed = {
        name: cluster.metric(name, "tideflow_scheduler_events_total")
        for name in ("scheduler-0", "scheduler-1")
    }
    assert all(count > 0 for count in processed.values()), processed
