from __future__ import annotations

import prometheus_client

STATEMENTS = prometheus_client.Counter(
    "tideflow_store_statements_total",
    "SQL statements sent to the database (round trips).",
    ["backend"],
)
TRANSACTIONS = prometheus_client.Counter(
    "tideflow_store_transactions_total",
    "Store transactions committed or rolled back.",
    ["backend", "result"],
)
