from __future__ import annotations

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
