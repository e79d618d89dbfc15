"""Renders the Helm chart in deploy/k8s with Helm v4's own code (helm-python-sdk, no binary)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "k8s"
VALUES = pathlib.Path(__file__).parent / "values"
VALUES_FILES = sorted(path.stem for path in VALUES.glob("*.yaml"))
RELEASE = "tf"
NAMESPACE = "tideflow"


def values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((VALUES / f"{name}.yaml").read_text())
    return loaded


def render(given: dict[str, Any]) -> dict[str, str]:
    """The chart's rendered templates by path, as `helm template` (an install) makes them."""
    chart = helm.Chart.load(CHART)
    rendered: dict[str, str] = chart.render(
        given, name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    return rendered


def manifests(given: dict[str, Any]) -> list[dict[str, Any]]:
    """Every Kubernetes object the chart renders (NOTES.txt is not one)."""
    objects: list[dict[str, Any]] = []
    for path, text in render(given).items():
        if path.endswith(".txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: found {len(found)}"
    return found[0]


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(object name, container) of every pod template: Deployments and Jobs."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "Job"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                yield obj["metadata"]["name"], container


def notes(given: dict[str, Any]) -> str:
    return next(text for path, text in render(given).items() if path.endswith("NOTES.txt"))
