"""docker-compose.yml's monitoring: Prometheus scrapes every tideflow process where it serves
metrics, and Grafana is provisioned with Prometheus and the chart's own dashboard."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import yaml
from rendering import ROOT

COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"


def _mounts(service: str) -> dict[str, str]:
    mounts = {}
    for volume in SERVICES[service]["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = source
    return mounts


def _scraped_ports() -> dict[str, int]:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    ports = {}
    for job in config["scrape_configs"]:
        for discovery in job["dns_sd_configs"]:
            for name in discovery["names"]:
                ports[name] = discovery["port"]
    return ports


def test_prometheus_scrapes_every_tideflow_process_on_its_metrics_port() -> None:
    long_running = {
        name
        for name, service in SERVICES.items()
        if service.get("image") == "tideflow:latest" and service["command"][0] != "migrate"
    }
    assert long_running == {"api", "scheduler", "worker"}
    ports = _scraped_ports()
    assert set(ports) == long_running
    api_command = [str(part) for part in SERVICES["api"]["command"]]
    assert ports["api"] == int(api_command[api_command.index("--port") + 1])
    for name in ("scheduler", "worker"):
        assert ports[name] == int(SERVICES[name]["environment"]["TIDEFLOW_METRICS_PORT"])
    mounted = _mounts("prometheus")["/etc/prometheus/prometheus.yml"]
    assert (ROOT / mounted).resolve() == PROMETHEUS_CONFIG


def test_the_prometheus_config_is_valid() -> None:
    promtool = shutil.which("promtool")  # in Debian's prometheus package, as .ci/run installs
    assert promtool is not None
    subprocess.run([promtool, "check", "config", str(PROMETHEUS_CONFIG)], check=True)


def test_grafana_is_provisioned_with_prometheus_and_the_charts_dashboard() -> None:
    mounts = _mounts("grafana")
    provisioning = ROOT / mounts["/etc/grafana/provisioning"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "tideflow.yml").read_text())
    (provider,) = providers["providers"]
    dashboards = provider["options"]["path"]
    mounted = {target: source for target, source in mounts.items() if target.startswith(dashboards)}
    assert [(ROOT / source).read_text() for source in mounted.values()] == [
        (ROOT / "deploy" / "k8s" / "files" / "tideflow-dashboard.json").read_text()
    ]
