"""The Grafana dashboard: built by deploy/grafana/dashboard.py, committed as JSON in the repo
and in the chart, with the rows operators look for."""

from __future__ import annotations

import importlib.util
import json
from types import ModuleType

from rendering import ROOT, manifests, of_kind, values

BUILDER = ROOT / "deploy" / "grafana" / "dashboard.py"
ROWS = [
    "Throughput",
    "Latency",
    "Backlog and saturation",
    "Errors and retries",
    "Flow control",
    "Infrastructure",
]


def _builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tideflow_dashboard", BUILDER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_json_is_what_the_builder_makes() -> None:
    builder = _builder()
    built = builder.render()
    for path in builder.OUTPUTS:
        assert path.read_text() == built, f"{path}: run python deploy/grafana/dashboard.py"


def test_the_dashboard_has_its_rows_and_a_query_per_panel() -> None:
    dashboard = json.loads(_builder().render())
    rows = [panel["title"] for panel in dashboard["panels"] if panel["type"] == "row"]
    assert rows == ROWS
    for panel in dashboard["panels"]:
        if panel["type"] == "timeseries":
            assert panel["targets"], panel["title"]
            assert all(target["expr"] for target in panel["targets"])


def test_the_charts_configmap_carries_the_dashboard_for_the_grafana_sidecar() -> None:
    (configmap,) = of_kind(manifests(values("defaults")), "ConfigMap")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(configmap["data"]["tideflow.json"])
    assert shipped == json.loads(
        (ROOT / "deploy" / "grafana" / "tideflow-dashboard.json").read_text()
    )
