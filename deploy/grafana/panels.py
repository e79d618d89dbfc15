"""Reads the dashboard's panels and evaluates their PromQL against a Prometheus server: for the
test that every panel has data, and for rendering the dashboard without Grafana.

    python deploy/grafana/panels.py http://127.0.0.1:9090 START END docs/dashboard.png

renders every panel from Prometheus' answers (matplotlib) into one PNG.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import re
import sys
from typing import Any

import httpx

DASHBOARD = pathlib.Path(__file__).resolve().parent / "tideflow-dashboard.json"
# Grafana's variables, as a test or a rendering without Grafana fills them in.
VARIABLES = {"$__rate_interval": "15s", "$job": ".+"}


@dataclasses.dataclass(frozen=True)
class Target:
    expr: str
    legend: str


@dataclasses.dataclass(frozen=True)
class Panel:
    row: str
    title: str
    unit: str
    targets: tuple[Target, ...]
    text: str = ""


def panels(dashboard: dict[str, Any] | None = None) -> list[Panel]:
    """Every panel in order, with its row; text panels carry their content and no target."""
    board = dashboard or json.loads(DASHBOARD.read_text())
    found, row = [], ""
    for panel in board["panels"]:
        if panel["type"] == "row":
            row = panel["title"]
            continue
        targets = tuple(
            Target(target["expr"], target.get("legendFormat", ""))
            for target in panel.get("targets") or []
        )
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        text = (panel.get("options") or {}).get("content", "")
        found.append(Panel(row, panel["title"], unit, targets, text))
    return found


def promql(expr: str, variables: dict[str, str] | None = None) -> str:
    for name, value in (variables or VARIABLES).items():
        expr = expr.replace(name, value)
    return expr


def query_range(
    url: str, expr: str, *, start: float, end: float, step_s: float = 1.0
) -> list[dict[str, Any]]:
    """The series of `expr` (Grafana variables filled in) from Prometheus' HTTP API."""
    answer = httpx.get(
        f"{url}/api/v1/query_range",
        params={"query": promql(expr), "start": start, "end": end, "step": step_s},
        timeout=10,
    )
    body = answer.json()
    if body.get("status") != "success":
        raise ValueError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def has_data(series: list[dict[str, Any]]) -> bool:
    """Whether any series has a number (a quantile over no observations is NaN: no data)."""
    return any(not math.isnan(float(value)) for one in series for _, value in one.get("values", []))


def legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def render_png(url: str, *, start: float, end: float, path: pathlib.Path) -> None:
    """Draws every panel from Prometheus' answers, laid out as the dashboard's rows."""
    import matplotlib

    matplotlib.use("Agg")
    from datetime import UTC, datetime

    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    shown = [panel for panel in panels() if panel.targets]
    columns = 3
    rows = math.ceil(len(shown) / columns)
    figure = plt.figure(figsize=(18, 3.2 * rows), facecolor="#111217")
    figure.suptitle("tideflow", color="#d8d9da", fontsize=16, x=0.02, ha="left")
    for index, panel in enumerate(shown):
        axes = figure.add_subplot(rows, columns, index + 1, facecolor="#181b1f")
        for target in panel.targets:
            for series in query_range(url, target.expr, start=start, end=end):
                points = [
                    (datetime.fromtimestamp(t, UTC), float(v))
                    for t, v in series["values"]
                    if not math.isnan(float(v))
                ]
                if points:
                    times, values = zip(*points, strict=True)
                    axes.plot(
                        times, values, linewidth=1.3, label=legend(target.legend, series["metric"])
                    )
        axes.set_title(
            f"{panel.row} · {panel.title} ({panel.unit})", color="#d8d9da", fontsize=9, loc="left"
        )
        axes.tick_params(colors="#8e8e8e", labelsize=7)
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
        axes.grid(color="#2c3235", linewidth=0.6)
        for spine in axes.spines.values():
            spine.set_color("#2c3235")
        if axes.lines:
            axes.legend(
                fontsize=6,
                loc="upper left",
                facecolor="#181b1f",
                labelcolor="#d8d9da",
                framealpha=0.8,
            )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, facecolor=figure.get_facecolor())
    plt.close(figure)


if __name__ == "__main__":
    url, start, end, out = sys.argv[1:5]
    render_png(url, start=float(start), end=float(end), path=pathlib.Path(out))
    print(f"wrote {out}")
