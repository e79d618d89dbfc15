"""The PostgreSQL pool's gauges move with its use: connections lent out, and callers waiting
for one when every connection is lent."""

from __future__ import annotations

import asyncio

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tideflow.store._postgres import PostgresStore

pytestmark = [pytest.mark.postgres]


def gauges() -> dict[str, float]:
    text = prometheus_client.generate_latest().decode()
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("tideflow_store_pool_"):
                state = sample.labels.get("state")
                found[f"{sample.name}:{state}" if state else sample.name] = sample.value
    return found


async def test_in_use_and_waiting_rise_while_the_pool_is_exhausted_then_fall(
    postgres_url: str,
) -> None:
    store = PostgresStore(postgres_url, min_size=1, max_size=1)
    await store.open()
    try:
        await store.migrate()
        before = gauges()
        # Hold the pool's one connection in a transaction, and ask for another meanwhile.
        async with store._transaction():
            waiter = asyncio.create_task(store.list_functions())
            await asyncio.sleep(0.3)
            during = gauges()
        await asyncio.wait_for(waiter, timeout=10)
        after = gauges()
    finally:
        await store.close()

    assert during["tideflow_store_pool_connections:in_use"] >= 1
    assert during["tideflow_store_pool_requests_waiting"] >= 1
    assert (
        during["tideflow_store_pool_requests_waiting"]
        > before["tideflow_store_pool_requests_waiting"]
    )
    assert (
        after["tideflow_store_pool_requests_waiting"]
        == before["tideflow_store_pool_requests_waiting"]
    )
    assert (
        after["tideflow_store_pool_connections:in_use"]
        < during["tideflow_store_pool_connections:in_use"]
    )
