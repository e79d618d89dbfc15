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
RUNS_FINISHED = prometheus_client.Counter(
    "tideflow_runs_finished_total",
    "Runs ended, by function and status (Completed, Failed, Cancelled).",
    ["function", "status"],
)


def run_finished(function_id: str, status: str) -> None:
    """Counts a run that ended: called by whoever committed its end (scheduler or API)."""
    RUNS_FINISHED.labels(function_id, status).inc()
