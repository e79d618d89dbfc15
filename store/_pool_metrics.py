"""The PostgreSQL connection pool's use, read from psycopg-pool's own statistics at scrape time."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import prometheus_client
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

_POOLS: weakref.WeakSet[Any] = weakref.WeakSet()


def track(pool: Any) -> None:
    """Reports `pool` (an open psycopg_pool pool) until it is closed or garbage."""
    _POOLS.add(pool)


class _PoolCollector(Collector):
    def collect(self) -> Iterator[GaugeMetricFamily]:
        in_use = idle = waiting = size_max = 0
        for pool in list(_POOLS):
            if pool.closed:
                continue
            stats = pool.get_stats()  # a snapshot; unlike pop_stats, it resets nothing
            in_use += stats["pool_size"] - stats["pool_available"]
            idle += stats["pool_available"]
            waiting += stats.get("requests_waiting", 0)
            size_max += stats["pool_max"]
        connections = GaugeMetricFamily(
            "tideflow_store_pool_connections",
            "PostgreSQL pool connections, by state (in_use: lent out; idle: ready to lend).",
            labels=["state"],
        )
        connections.add_metric(["in_use"], in_use)
        connections.add_metric(["idle"], idle)
        yield connections
        yield GaugeMetricFamily(
            "tideflow_store_pool_requests_waiting",
            "Callers waiting for a PostgreSQL pool connection.",
            value=waiting,
        )
        yield GaugeMetricFamily(
            "tideflow_store_pool_connections_max",
            "The PostgreSQL pool's maximum size.",
            value=size_max,
        )


prometheus_client.REGISTRY.register(_PoolCollector())
