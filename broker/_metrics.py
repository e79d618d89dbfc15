"""The broker's Prometheus metrics. Labels are bounded: a broker kind, an exchange or queue of
the fixed topology, or an app's work queue (one per app)."""

from __future__ import annotations

from typing import Any

import prometheus_client

PUBLISHED = prometheus_client.Counter(
    "tideflow_broker_messages_published_total",
    "Messages published (confirmed).",
    ["broker", "exchange"],
)
CONSUMED = prometheus_client.Counter(
    "tideflow_broker_messages_consumed_total",
    "Messages delivered to a consumer.",
    ["broker", "queue"],
)
RECONNECTS = prometheus_client.Counter(
    "tideflow_broker_reconnects_total",
    "Connections to RabbitMQ re-opened after they were lost, by role.",
    ["connection"],
)
QUEUE_MESSAGES = prometheus_client.Gauge(
    "tideflow_broker_queue_messages",
    "Messages ready in a queue (not yet delivered), as last sampled.",
    ["queue"],
)


def count_reconnects(connection: Any, role: str) -> None:
    """Counts each time aio-pika re-opens `connection` (a robust connection) after a loss."""
    RECONNECTS.labels(role)
    connection.reconnect_callbacks.add(lambda *_: RECONNECTS.labels(role).inc())
