"""`tideflow dev` serves every part's metrics (api, scheduler, worker, store, broker) on
/metrics, and a short load moves each series of the issue's list, with bounded labels."""

from __future__ import annotations

import contextlib
import pathlib
import re

import pytest
from helpers import Api, eventually, free_port, running
from prometheus_client.parser import text_string_to_metric_families
from workload import APP

pytestmark = pytest.mark.slow

# Series the load must move (a value above zero), by family and labels.
MOVING = {
    ("tideflow_api_events_received_total", ()),
    ("tideflow_api_events_accepted_total", ()),
    ("tideflow_api_events_rejected_total", (("reason", "invalid_json"),)),
    ("tideflow_api_events_rejected_total", (("reason", "invalid_event"),)),
    ("tideflow_scheduler_events_total", ()),
    ("tideflow_runs_started_total", (("function", "load-order"),)),
    ("tideflow_runs_finished_total", (("function", "load-order"), ("status", "Completed"))),
    ("tideflow_runs_finished_total", (("function", "load-refund"), ("status", "Failed"))),
    ("tideflow_runs_finished_total", (("function", "load-order"), ("status", "Cancelled"))),
    ("tideflow_step_duration_seconds_count", (("function", "load-order"), ("op", "run"))),
    ("tideflow_run_queued_seconds_count", (("function", "load-order"),)),
    ("tideflow_scheduler_timer_lateness_seconds_count", (("kind", "sleep"),)),
    ("tideflow_scheduler_timer_lateness_seconds_count", (("kind", "retry"),)),
    ("tideflow_step_retries_total", (("function", "load-order"),)),
    ("tideflow_worker_steps_total", (("status", "Completed"),)),
    (
        "tideflow_broker_messages_published_total",
        (("broker", "memory"), ("exchange", "tideflow.events")),
    ),
    ("tideflow_store_statements_total", (("backend", "sqlite"),)),
    (
        "tideflow_api_request_duration_seconds_count",
        (("method", "POST"), ("route", "/e/{event_key}"), ("status", "200")),
    ),
}
# Gauges and counters that need no load to be exported, or whose value depends on timing.
PRESENT = {
    "tideflow_worker_jobs_in_flight",
    "tideflow_broker_queue_messages",
    "tideflow_scheduler_jobs_redispatched_total",
    "tideflow_worker_leases_lost_total",
    "process_cpu_seconds_total",
}


def _samples(api: Api) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = api.http.get("/metrics").text
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            if "le" not in sample.labels:
                found[(sample.name, labels)] = sample.value
    return found


def test_tideflow_dev_serves_every_metric_and_the_load_moves_them(tmp_path: pathlib.Path) -> None:
    (tmp_path / "loadapp.py").write_text(APP)
    port = free_port()
    env = {
        "TIDEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "TIDEFLOW_RETRY_BACKOFF_BASE_MS": "100",
        "TIDEFLOW_LOG_LEVEL": "WARNING",
    }
    args = ["dev", "loadapp:client", "--port", str(port)]
    with running(args, cwd=tmp_path, env=env, name="dev"), Api(port) as api:
        eventually(api.healthy, what="tideflow dev to answer")
        events = [{"name": "load/order", "data": {"n": n, "flaky": n == 0}} for n in range(6)]
        ids = api.send(*events, {"name": "load/refund", "data": {"n": 0}})
        # The gauge of jobs in flight rises while their steps (0.3 s each) execute.
        eventually(
            lambda: _samples(api).get(("tideflow_worker_jobs_in_flight", ()), 0) > 0,
            timeout_s=20,
            interval_s=0.05,
            what="a job in flight",
        )
        assert api.http.post("/e/test", content=b"{not json").status_code == 400
        assert api.http.post("/e/test", json={"data": {}}).status_code == 400
        waiting = api.send({"name": "load/order", "data": {"n": 99, "wait": True}})[0]
        run_id = eventually(
            lambda: (runs := api.runs(waiting)) and runs[0]["run_id"], what="the waiting run"
        )
        eventually(lambda: api.run(run_id)["status"] == "Running", what="it to run")
        assert api.http.delete(f"/v1/runs/{run_id}").status_code == 200

        def ended() -> bool:
            return all(
                api.runs(i) and api.runs(i)[0]["status"] in ("Completed", "Failed") for i in ids
            )

        eventually(ended, timeout_s=45, interval_s=0.3, what="the runs to end")
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        def still() -> list[object]:
            samples.clear()
            samples.update(_samples(api))
            missing: list[object] = [key for key in MOVING if samples.get(key, 0) <= 0]
            names = {name for name, _ in samples}
            return missing + sorted(PRESENT - names)

        # The queue depths are sampled every few seconds: wait for a sample.
        with contextlib.suppress(AssertionError):
            eventually(lambda: not still(), timeout_s=20, interval_s=0.5, what="metrics")
        assert still() == []
        names = {name for name, _ in samples}
        assert names >= PRESENT
        # Bounded labels: no run id or event id is ever a label value.
        values = {value for _, labels in samples for _, value in labels}
        run_ids = {api.runs(i)[0]["run_id"] for i in ids}
        assert not values & (set(ids) | run_ids | {run_id, waiting})
        assert not any(re.fullmatch(r"[0-9A-Z]{26}", value) for value in values)
