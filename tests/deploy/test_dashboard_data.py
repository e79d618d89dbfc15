"""Every panel of the Grafana dashboard has data: a real Prometheus (Debian's package) scrapes
a running cluster (api, scheduler, worker on PostgreSQL and RabbitMQ) under a short load, and
each panel's PromQL is evaluated through Prometheus' HTTP API."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from types import ModuleType

import httpx
import pytest
from helpers import TIDEFLOW, Api, Process, eventually, free_port
from rendering import ROOT
from workload import APP

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq, pytest.mark.slow]


PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tideflow-api
    static_configs: [{{targets: ["127.0.0.1:{api}"]}}]
  - job_name: tideflow-scheduler
    static_configs: [{{targets: ["127.0.0.1:{scheduler}"]}}]
  - job_name: tideflow-worker
    static_configs: [{{targets: ["127.0.0.1:{worker}"]}}]
"""

# Counters and histograms the load must move (the series of the list); gauges are
# checked for presence by the panels, since their value at a scrape depends on timing.
MOVING = [
    "tideflow_api_events_received_total",
    "tideflow_api_events_accepted_total",
    'tideflow_api_events_rejected_total{reason="invalid_json"}',
    "tideflow_scheduler_events_total",
    'tideflow_runs_started_total{function="load-order"}',
    'tideflow_runs_finished_total{status="Completed"}',
    'tideflow_runs_finished_total{status="Failed"}',
    "tideflow_step_duration_seconds_count",
    "tideflow_run_queued_seconds_count",
    "tideflow_scheduler_timer_lateness_seconds_count",
    'tideflow_step_retries_total{function="load-order"}',
    "tideflow_broker_messages_published_total",
    "tideflow_store_statements_total",
    'tideflow_scheduler_jobs_admitted_total{function="load-slot"}',
    'tideflow_scheduler_events_refused_total{function="load-limited",reason="rate_limited"}',
    'tideflow_scheduler_runs_throttled_total{function="load-throttled"}',
    'tideflow_scheduler_events_held_total{function="load-debounced",rule="debounce"}',
    'tideflow_scheduler_events_held_total{function="load-batched",rule="batch"}',
]


def _panels_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "tideflow_panels", ROOT / "deploy" / "grafana" / "panels.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    # .ci/run installs Debian's package when it is missing; without it this test cannot run.
    assert binary is not None, "the prometheus binary is missing: apt-get install prometheus"
    return binary


@contextlib.contextmanager
def prometheus(tmp_path: pathlib.Path, *, api: int, scheduler: int, worker: int) -> Iterator[str]:
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.format(api=api, scheduler=scheduler, worker=worker))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            _prometheus_binary(),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(
            lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200,
            what="Prometheus to be ready",
        )
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextlib.contextmanager
def cluster(tmp_path: pathlib.Path, env: dict[str, str]) -> Iterator[tuple[Api, dict[str, int]]]:
    (tmp_path / "loadapp.py").write_text(APP)
    subprocess.run(
        [TIDEFLOW, "migrate"],
        cwd=tmp_path,
        env={**os.environ, **env},
        check=True,
        timeout=60,
    )
    ports = {"api": free_port(), "scheduler": free_port(), "worker": free_port()}
    processes = [
        Process(["api", "--port", str(ports["api"])], cwd=tmp_path, env=env, name="api"),
        Process(
            ["scheduler"],
            cwd=tmp_path,
            env={**env, "TIDEFLOW_METRICS_PORT": str(ports["scheduler"])},
            name="scheduler",
        ),
        Process(
            ["worker", "loadapp:client", "--concurrency", "4"],
            cwd=tmp_path,
            env={**env, "TIDEFLOW_METRICS_PORT": str(ports["worker"])},
            name="worker",
        ),
    ]
    api = Api(ports["api"])
    try:
        eventually(api.healthy, what="the API to answer")
        eventually(
            lambda: "load-order" in processes[1].output(), what="the scheduler to know the app"
        )
        yield api, ports
    except BaseException:
        for process in processes:
            sys.stderr.write(f"== {process.log_path.name}\n{process.output()[-3000:]}\n")
        raise
    finally:
        for process in processes:
            process.stop()
        api.http.close()


def _scraped(url: str) -> bool:
    """Whether Prometheus has scraped all three processes at least once."""
    answer = httpx.get(f"{url}/api/v1/query", params={"query": "sum(up)"}, timeout=5).json()
    result = answer["data"]["result"]
    return bool(result) and float(result[0]["value"][1]) == 3


def _send_load(api: Api) -> tuple[list[str], list[str]]:
    """A few dozen runs, including retries and failures, in waves over a few scrapes (a rate
    needs two samples of a series); and events for flow control: runs of a function limited
    to one step at a time (a backlog the pending gauge samples), and events that a rate limit
    refuses, a throttle delays, a debounce and a batch hold. Returns the ids of the first kind
    and of the limited function's events."""
    ids: list[str] = []
    slots: list[str] = []
    for wave in range(4):
        events = [
            {"name": "load/order", "data": {"n": n, "flaky": n % 4 == 0}}
            for n in range(wave * 8, wave * 8 + 8)
        ]
        events.append({"name": "load/refund", "data": {"n": wave}})
        ids += api.send(*events)
        slots += api.send(*({"name": "load/slot", "data": {"n": n}} for n in range(6)))
        api.send(*({"name": "load/flow", "data": {"n": n}} for n in range(3)))
        time.sleep(1.5)
    refused = api.http.post("/e/test", content=b"{not json")
    assert refused.status_code == 400
    return ids, slots


def _ended(api: Api, event_ids: list[str]) -> bool:
    for event_id in event_ids:
        runs = api.runs(event_id)
        if not runs or runs[0]["status"] not in ("Completed", "Failed", "Cancelled"):
            return False
    return True


def test_every_dashboard_panel_has_data_from_a_live_cluster(
    tmp_path: pathlib.Path, postgres_url: str, rabbitmq_url: str
) -> None:
    panels = _panels_module()
    env = {
        "TIDEFLOW_DATABASE_URL": postgres_url,
        "TIDEFLOW_BROKER_URL": rabbitmq_url,
        "TIDEFLOW_RETRY_BACKOFF_BASE_MS": "100",
        "TIDEFLOW_LEASE_S": "5",
    }
    with (
        cluster(tmp_path, env) as (api, ports),
        prometheus(tmp_path, **ports) as url,
    ):
        eventually(lambda: _scraped(url), what="Prometheus to scrape every process")
        start = time.time() - 5
        event_ids, slot_ids = _send_load(api)
        eventually(lambda: _ended(api, event_ids), timeout_s=45, interval_s=0.3, what="runs")
        statuses = sorted(api.runs(event_id)[0]["status"] for event_id in event_ids)
        assert statuses.count("Failed") == 4
        assert statuses.count("Completed") == 32

        def moved() -> bool:
            end = time.time()
            return all(
                panels.has_data(panels.query_range(url, f"sum({m}) > 0", start=start, end=end))
                for m in MOVING
            )

        eventually(moved, timeout_s=20, interval_s=1, what="the load's metrics to be scraped")

        missing: list[str] = []

        def all_panels_have_data() -> bool:
            missing.clear()
            end = time.time()
            for panel in panels.panels():
                for target in panel.targets:
                    series = panels.query_range(url, target.expr, start=start, end=end)
                    if not panels.has_data(series):
                        missing.append(f"{panel.row} / {panel.title}: {target.expr}")
            return not missing

        # Queue depths are sampled every 5 s by the scheduler; give them a few samples.
        with contextlib.suppress(AssertionError):
            eventually(all_panels_have_data, timeout_s=20, interval_s=1, what="panels")
        assert missing == []
        flow_control = [p for p in panels.panels() if p.row == "Flow control"]
        assert len(flow_control) == 5
        assert all(p.targets for p in flow_control), "a flow-control panel is a placeholder"
        # The limited function's backlog drained: one step at a time, every run completed.
        eventually(lambda: _ended(api, slot_ids), timeout_s=45, interval_s=0.3, what="slots")
        assert {api.runs(event_id)[0]["status"] for event_id in slot_ids} == {"Completed"}
        if out := os.environ.get("TIDEFLOW_DASHBOARD_PNG"):
            panels.render_png(url, start=start, end=time.time(), path=pathlib.Path(out))
