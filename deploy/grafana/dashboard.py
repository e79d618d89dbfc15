"""The tideflow Grafana dashboard, built with grafana-foundation-sdk (Grafana's own typed
builders, generated from Grafana's schemas, so a wrong field or panel option fails here rather
than in Grafana).

    python deploy/grafana/dashboard.py      # writes the JSON into the chart and next to this file

Every query reads a series tideflow exports (see the `*_metrics.py` modules); the test in
tests/deploy/test_dashboard_data.py evaluates each one against a live cluster.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import TimeZoneBrowser
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh

HERE = pathlib.Path(__file__).resolve().parent
OUTPUTS = (
    HERE / "tideflow-dashboard.json",
    HERE.parent / "k8s" / "files" / "tideflow-dashboard.json",
)
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
PROCESS = 'job=~"$job"'


def _query(expr: str, legend: str, ref_id: str) -> Dataquery:
    return Dataquery().expr(expr).legend_format(legend).ref_id(ref_id).datasource(DATASOURCE)


def _panel(
    title: str, unit: str, queries: Sequence[tuple[str, str]], *, description: str = ""
) -> Timeseries:
    panel = (
        Timeseries()
        .title(title)
        .description(description)
        .unit(unit)
        .min(0)
        .datasource(DATASOURCE)
        .span(8)
        .height(8)
        .fill_opacity(10)
    )
    for index, (expr, legend) in enumerate(queries):
        panel = panel.with_target(_query(expr, legend, chr(ord("A") + index)))
    return panel


def _quantiles(metric: str, by: str, legend: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le{by and ', ' + by}) (rate({metric}_bucket[{RATE}])))",
            f"p{round(q * 100)} {legend}".strip(),
        )
        for q in (0.5, 0.95, 0.99)
    ]


def throughput() -> list[Timeseries]:
    return [
        _panel(
            "Events",
            "eps",
            [
                (f"sum(rate(tideflow_api_events_received_total[{RATE}]))", "received (API)"),
                (f"sum(rate(tideflow_api_events_accepted_total[{RATE}]))", "accepted (API)"),
                (
                    f"sum by (reason) (rate(tideflow_api_events_rejected_total[{RATE}]))",
                    "rejected: {{reason}}",
                ),
                (f"sum(rate(tideflow_scheduler_events_total[{RATE}]))", "processed (scheduler)"),
            ],
            description="Events posted to the API, and events the schedulers processed "
            "(including those published straight to the AMQP exchange).",
        ),
        _panel(
            "Runs",
            "ops",
            [
                (
                    f"sum by (function) (rate(tideflow_runs_started_total[{RATE}]))",
                    "started {{function}}",
                ),
                (
                    f"sum by (status) (rate(tideflow_runs_finished_total[{RATE}]))",
                    "{{status}}",
                ),
            ],
        ),
        _panel(
            "Steps and jobs",
            "ops",
            [
                (
                    f"sum by (status) (rate(tideflow_worker_steps_total[{RATE}]))",
                    "steps {{status}}",
                ),
                (
                    f"sum by (outcome) (rate(tideflow_worker_jobs_total[{RATE}]))",
                    "jobs {{outcome}}",
                ),
                (
                    f"sum by (kind) (rate(tideflow_scheduler_timers_fired_total[{RATE}]))",
                    "timers fired {{kind}}",
                ),
            ],
        ),
    ]


def latency() -> list[Timeseries]:
    return [
        _panel(
            "Step duration",
            "s",
            _quantiles("tideflow_step_duration_seconds", "function", "{{function}}"),
            description="Time a step took, by function (all ops).",
        ),
        _panel(
            "Queued latency",
            "s",
            _quantiles("tideflow_run_queued_seconds", "", ""),
            description="From a run being queued (its event accepted) to its first step "
            "job starting.",
        ),
        _panel(
            "API request duration",
            "s",
            [
                (
                    "histogram_quantile(0.95, sum by (le, route) "
                    f"(rate(tideflow_api_request_duration_seconds_bucket[{RATE}])))",
                    "p95 {{route}}",
                ),
            ],
        ),
    ]


def backlog() -> list[Timeseries]:
    return [
        _panel(
            "Work queues",
            "short",
            [
                (
                    'max by (queue) (tideflow_broker_queue_messages{queue=~"tideflow[.]jobs[.].+"})',
                    "{{queue}}",
                )
            ],
            description="Step jobs waiting for a worker, per app queue (what KEDA scales on).",
        ),
        _panel(
            "Scheduler backlog",
            "short",
            [
                (
                    "max by (queue) "
                    '(tideflow_broker_queue_messages{queue=~"tideflow[.]scheduler[.].+"})',
                    "{{queue}}",
                )
            ],
            description="Events and job outcomes waiting for a scheduler.",
        ),
        _panel(
            "Jobs in flight",
            "short",
            [
                ("sum(tideflow_worker_jobs_in_flight)", "all workers"),
                ("sum by (instance) (tideflow_worker_jobs_in_flight)", "{{instance}}"),
            ],
        ),
        _panel(
            "Timer lateness",
            "s",
            _quantiles("tideflow_scheduler_timer_lateness_seconds", "kind", "{{kind}}")[1:],
            description="How long after their due time timers (sleeps, retries, wait "
            "timeouts) fire.",
        ),
    ]


def errors() -> list[Timeseries]:
    return [
        _panel(
            "Failed and cancelled runs",
            "ops",
            [
                (
                    "sum by (function, status) "
                    f'(rate(tideflow_runs_finished_total{{status!="Completed"}}[{RATE}]))',
                    "{{status}} {{function}}",
                )
            ],
        ),
        _panel(
            "Retries",
            "ops",
            [
                (
                    f"sum by (function) (rate(tideflow_step_retries_total[{RATE}]))",
                    "{{function}}",
                )
            ],
        ),
        _panel(
            "Lease expiries",
            "ops",
            [
                (
                    f"sum(rate(tideflow_scheduler_jobs_redispatched_total[{RATE}]))",
                    "re-dispatched by the sweeper",
                ),
                (f"sum(rate(tideflow_worker_leases_lost_total[{RATE}]))", "lost by a worker"),
            ],
        ),
    ]


def flow_control() -> list[Timeseries]:
    return [
        _panel(
            "Concurrency: slots in use and jobs waiting",
            "short",
            # Every scheduler samples the same store: max, not sum.
            [
                ("max by (function) (tideflow_scheduler_slots_in_use)", "in use {{function}}"),
                ("max by (function) (tideflow_scheduler_jobs_pending)", "waiting {{function}}"),
            ],
            description="Slots held by admitted step jobs, and step jobs pending admission, by "
            "function (sampled every few seconds).",
        ),
        _panel(
            "Jobs admitted",
            "ops",
            [
                (
                    f"sum by (function) (rate(tideflow_scheduler_jobs_admitted_total[{RATE}]))",
                    "{{function}}",
                )
            ],
            description="Step jobs of concurrency-limited functions let into their slots.",
        ),
        _panel(
            "Events that started no run",
            "ops",
            [
                (
                    "sum by (function, reason) "
                    f"(rate(tideflow_scheduler_events_refused_total[{RATE}]))",
                    "{{reason}} {{function}}",
                )
            ],
            description="Refused by a rate limit, an idempotency key or a singleton.",
        ),
        _panel(
            "Runs delayed by throttle",
            "ops",
            [
                (
                    f"sum by (function) (rate(tideflow_scheduler_runs_throttled_total[{RATE}]))",
                    "{{function}}",
                )
            ],
        ),
        _panel(
            "Events held (debounce, batching)",
            "ops",
            [
                (
                    f"sum by (function, rule) (rate(tideflow_scheduler_events_held_total[{RATE}]))",
                    "{{rule}} {{function}}",
                )
            ],
            description="Events kept before their run exists: a burst's or a batch's.",
        ),
    ]


def infrastructure() -> list[Timeseries]:
    return [
        _panel(
            "PostgreSQL pool",
            "short",
            [
                (
                    'sum by (instance) (tideflow_store_pool_connections{state="in_use"})',
                    "in use {{instance}}",
                ),
                (
                    "sum by (instance) (tideflow_store_pool_requests_waiting)",
                    "waiting {{instance}}",
                ),
            ],
        ),
        _panel(
            "Store round trips",
            "ops",
            [
                (
                    f"sum by (instance) (rate(tideflow_store_statements_total[{RATE}]))",
                    "{{instance}}",
                ),
                (
                    f"sum by (result) (rate(tideflow_store_transactions_total[{RATE}]))",
                    "transactions {{result}}",
                ),
            ],
        ),
        _panel(
            "Broker",
            "ops",
            [
                (
                    f"sum by (exchange) (rate(tideflow_broker_messages_published_total[{RATE}]))",
                    "published to {{exchange}}",
                ),
                (
                    f"sum by (queue) (rate(tideflow_broker_messages_consumed_total[{RATE}]))",
                    "consumed from {{queue}}",
                ),
                (
                    f"sum by (connection) (increase(tideflow_broker_reconnects_total[{RATE}]))",
                    "reconnects ({{connection}})",
                ),
            ],
        ),
        _panel(
            "CPU",
            "percentunit",
            [(f"rate(process_cpu_seconds_total{{{PROCESS}}}[{RATE}])", "{{job}} {{instance}}")],
        ),
        _panel(
            "Memory",
            "bytes",
            [(f"process_resident_memory_bytes{{{PROCESS}}}", "{{job}} {{instance}}")],
        ),
        _panel(
            "API requests",
            "reqps",
            [
                (
                    "sum by (route, status) "
                    f"(rate(tideflow_api_request_duration_seconds_count[{RATE}]))",
                    "{{status}} {{route}}",
                )
            ],
        ),
    ]


def build() -> Dashboard:
    dashboard = (
        Dashboard("tideflow")
        .uid("tideflow")
        .description(
            "Throughput, latency, backlog, errors and infrastructure of a tideflow cluster."
        )
        .tags(["tideflow"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone(TimeZoneBrowser)
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(
            QueryVariable("job")
            .label("Job")
            .datasource(DATASOURCE)
            .query("label_values(tideflow_store_statements_total, job)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".+")
        )
    )
    sections = [
        ("Throughput", throughput()),
        ("Latency", latency()),
        ("Backlog and saturation", backlog()),
        ("Errors and retries", errors()),
        ("Flow control", flow_control()),
        ("Infrastructure", infrastructure()),
    ]
    for title, panels in sections:
        dashboard = dashboard.with_row(Row(title))
        for panel in panels:
            dashboard = dashboard.with_panel(panel)
    return dashboard


def render() -> str:
    """The dashboard's JSON, as committed."""
    encoded = JSONEncoder(sort_keys=True, indent=2).encode(build().build())
    return json.dumps(json.loads(encoded), indent=2, sort_keys=True) + "\n"


def main() -> None:
    text = render()
    for path in OUTPUTS:
        path.write_text(text)
        print(f"wrote {path.relative_to(HERE.parents[1])}")


if __name__ == "__main__":
    main()
