"""The Helm chart in deploy/k8s: renders, lints and validates for every values file, and
carries what an operator relies on (secrets, probes, drain, autoscaling, hooks)."""

from __future__ import annotations

import importlib
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import tideflow
import yaml
from rendering import (
    CHART,
    NAMESPACE,
    ROOT,
    VALUES_FILES,
    containers,
    manifests,
    named,
    notes,
    of_kind,
    render,
    values,
)

KUBERNETES_VERSION = "1.30.0"
# kubernetes-validate ships the schemas of Kubernetes' own kinds only. KEDA's and the
# Prometheus operator's CRDs are not vendored (their schemas live in those projects' releases,
# which this offline suite cannot fetch); their objects are checked by the targeted tests below.
CRD_KINDS = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor"}
URLS = values("defaults")


def _env_names(container: dict[str, Any]) -> list[str]:
    return [entry["name"] for entry in container.get("env", [])]


@pytest.mark.parametrize("name", VALUES_FILES)
def test_chart_lints_clean(name: str) -> None:
    report = helm.lint(CHART, values(name), strict=True, kube_version=f"v{KUBERNETES_VERSION}")
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert report["errors"] == [], report
    assert problems == [], problems


@pytest.mark.parametrize("name", VALUES_FILES)
def test_every_manifest_validates_against_the_kubernetes_schemas(name: str) -> None:
    objects = manifests(values(name))
    assert objects
    for obj in objects:
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", VALUES_FILES)
def test_each_container_gets_exactly_the_settings_the_cli_reads(name: str) -> None:
    # A setting added to the CLI fails this test until the chart carries it, and the chart
    # carries nothing the CLI ignores.
    read = tideflow.Settings.variables()
    seen = 0
    for owner, container in containers(manifests(values(name))):
        names = _env_names(container)
        assert sorted(names) == sorted(read), owner
        assert len(names) == len(set(names)), owner
        seen += 1
    assert seen >= 4  # api, scheduler, migrate and at least one worker


def test_the_defaults_need_the_database_and_broker_urls() -> None:
    with pytest.raises(helm.HelmError, match=r"secrets\.databaseUrl is required"):
        render({})
    with pytest.raises(helm.HelmError, match=r"secrets\.brokerUrl is required"):
        render({"secrets": {"databaseUrl": "postgresql://db/tideflow"}})


def test_the_defaults_run_the_example_app_as_one_worker_from_the_projects_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objects = manifests(URLS)
    workers = [d for d in of_kind(objects, "Deployment") if "worker" in d["metadata"]["name"]]
    assert len(workers) == 1
    (container,) = workers[0]["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["worker", "examples.shop:client", "--concurrency", "10"]
    chart_values = helm.Chart.load(CHART).values
    assert container["image"] == f"{chart_values['image']['repository']}:0.1.0"
    # The image is the project's (Dockerfile): its entry point is the CLI, and it holds examples/.
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["tideflow"]' in dockerfile
    assert "COPY examples examples" in dockerfile
    # appId names the queue KEDA watches: it must be the client's app_id.
    # The image's working directory is the project's root, as this test's import path.
    monkeypatch.syspath_prepend(str(ROOT))
    module, attr = chart_values["workers"][0]["app"].split(":")
    client = getattr(importlib.import_module(module), attr)
    assert client.app_id == chart_values["workers"][0]["appId"]


def test_api_and_scheduler_run_as_deployments_with_their_replicas() -> None:
    objects = manifests({**URLS, "api": {"replicas": 3}, "scheduler": {"replicas": 4}})
    api = named(objects, "Deployment", "tf-tideflow-api")
    scheduler = named(objects, "Deployment", "tf-tideflow-scheduler")
    assert api["spec"]["replicas"] == 3
    assert scheduler["spec"]["replicas"] == 4
    assert api["spec"]["template"]["spec"]["containers"][0]["args"][0] == "api"
    assert scheduler["spec"]["template"]["spec"]["containers"][0]["args"] == ["scheduler"]
    service = named(objects, "Service", "tf-tideflow-api")
    assert service["spec"]["selector"] == api["spec"]["selector"]["matchLabels"]


def test_migrate_is_a_hook_job_and_its_secret_exists_before_it() -> None:
    objects = manifests(URLS)
    job = named(objects, "Job", "tf-tideflow-migrate")
    hook = job["metadata"]["annotations"]
    assert hook["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    secret = named(objects, "Secret", "tf-tideflow")
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        hook["helm.sh/hook-weight"]
    )
    assert secret["stringData"]["database-url"] == URLS["secrets"]["databaseUrl"]


def test_existing_secrets_are_referenced_and_none_is_created() -> None:
    given = values("external-secrets")
    objects = manifests(given)
    assert of_kind(objects, "Secret") == []
    for _, container in containers(objects):
        refs = {
            entry["name"]: entry["valueFrom"]["secretKeyRef"]
            for entry in container["env"]
            if "valueFrom" in entry
        }
        assert refs["TIDEFLOW_DATABASE_URL"] == {"name": "tideflow-postgres", "key": "url"}
        assert refs["TIDEFLOW_BROKER_URL"] == {"name": "tideflow-rabbitmq", "key": "url"}
        assert refs["TIDEFLOW_EVENT_KEY"] == {"name": "tideflow-keys", "key": "event"}
        assert refs["TIDEFLOW_SIGNING_KEY"] == {"name": "tideflow-keys", "key": "signing"}


def test_probes_and_drain() -> None:
    objects = manifests(URLS)
    for _, container in containers(objects):
        if container["name"] == "migrate":
            continue
        assert "readinessProbe" in container
        assert "livenessProbe" in container
    api = named(objects, "Deployment", "tf-tideflow-api")["spec"]["template"]["spec"]
    assert api["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/health"
    worker = named(objects, "Deployment", "tf-tideflow-worker-shop")["spec"]["template"]["spec"]
    # The worker drains running steps for 25 s (TIDEFLOW_SHUTDOWN_GRACE_S's default) on SIGTERM.
    assert worker["terminationGracePeriodSeconds"] > 25
    probe = worker["containers"][0]["livenessProbe"]["httpGet"]
    metrics_port = next(p for p in worker["containers"][0]["ports"] if p["name"] == "metrics")
    assert probe["port"] == "metrics"
    env = {e["name"]: e.get("value") for e in worker["containers"][0]["env"]}
    assert env["TIDEFLOW_METRICS_PORT"] == str(metrics_port["containerPort"])
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert {b["metadata"]["name"] for b in budgets} == {
        "tf-tideflow-api",
        "tf-tideflow-scheduler",
        "tf-tideflow-worker-shop",
    }


def test_workers_scale_on_cpu_without_keda() -> None:
    objects = manifests(URLS)
    assert of_kind(objects, "ScaledObject") == []
    (hpa,) = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "tf-tideflow-worker-shop"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    worker = named(objects, "Deployment", "tf-tideflow-worker-shop")
    assert "replicas" not in worker["spec"]  # the autoscaler owns it


def test_workers_scale_on_their_queue_depth_with_keda() -> None:
    objects = manifests(values("workers"))
    assert of_kind(objects, "HorizontalPodAutoscaler") == []
    scaled = {
        obj["spec"]["scaleTargetRef"]["name"]: obj for obj in of_kind(objects, "ScaledObject")
    }
    assert set(scaled) == {
        "tf-tideflow-worker-billing",
        "tf-tideflow-worker-emails",
        "tf-tideflow-worker-shop",
    }
    billing = scaled["tf-tideflow-worker-billing"]
    (trigger,) = billing["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["metadata"]["queueName"] == "tideflow.jobs.billing"
    assert (billing["spec"]["minReplicaCount"], billing["spec"]["maxReplicaCount"]) == (2, 20)
    (auth,) = of_kind(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "host", "name": "tf-tideflow", "key": "broker-url"}
    ]


def test_keda_without_its_api_in_the_cluster_fails_loudly() -> None:
    given = {**URLS, "autoscaling": {"keda": {"enabled": True}}}
    with pytest.raises(helm.HelmError, match=r"no KEDA \(API keda\.sh/v1alpha1 is absent\)"):
        render(given)


def test_each_worker_app_has_its_image_app_and_concurrency() -> None:
    objects = manifests(values("workers"))
    args = {}
    for owner, container in containers(objects):
        if container["name"] == "worker":
            args[owner] = (container["image"], container["args"], container["imagePullPolicy"])
    assert args == {
        "tf-tideflow-worker-billing": (
            "registry.example.com/billing:2.3.1",
            ["worker", "billing.flows:client", "--concurrency", "4"],
            "IfNotPresent",
        ),
        "tf-tideflow-worker-emails": (
            "registry.example.com/emails:1.0.0",
            ["worker", "emails.app:functions", "--concurrency", "50"],
            "Always",
        ),
        "tf-tideflow-worker-shop": (
            "registry.example.com/tideflow:0.1.0",
            ["worker", "examples.shop:client", "--concurrency", "10"],
            "IfNotPresent",
        ),
    }


def test_two_workers_may_not_share_a_name() -> None:
    given = {**URLS, "workers": [{"name": "a", "app": "m:c", "appId": "a"}] * 2}
    with pytest.raises(helm.HelmError, match=r'the name "a" is used twice'):
        render(given)


def test_service_monitor_scrapes_the_api_and_the_metrics_ports() -> None:
    objects = manifests(values("keda"))
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    selected = [
        s
        for s in of_kind(objects, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    ports = {port["name"] for s in selected for port in s["spec"]["ports"]}
    assert ports == {e["port"] for e in monitor["spec"]["endpoints"]} == {"http", "metrics"}
    (ingress,) = of_kind(objects, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "tideflow.example.com"


def test_notes_tell_how_to_send_a_first_event() -> None:
    text = notes(URLS)
    assert f"kubectl -n {NAMESPACE} port-forward svc/tf-tideflow-api 8288:8288" in text
    assert "curl -X POST http://127.0.0.1:8288/e/dev" in text
    assert "shop/user.created" in text


def test_the_readmes_helm_install_renders_a_cluster_with_the_readmes_worker() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploy to Kubernetes") : readme.index("## Monitoring")]
    command = section[section.index("helm install") :].split("```")[0]
    given: dict[str, Any] = {}
    for expression in re.findall(r"--set (\S+)", command):
        parsed = helm.parse_set_string(expression)
        (key,) = parsed
        given.setdefault(key, {}).update(parsed[key])
    worker_values = section.split("```yaml")[1].split("```")[0]
    objects = manifests({**given, **yaml.safe_load(worker_values)})
    images = {container["image"] for _, container in containers(objects)}
    assert images == {"registry.example.com/tideflow:0.1.0", "registry.example.com/billing:2.3.1"}
    assert named(objects, "Deployment", "tf-tideflow-worker-billing")


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        ({"workers": [{"name": "a", "app": "no-attribute", "appId": "a"}]}, "/workers/0/app"),
        ({"workers": [{"name": "a", "app": "m:c"}]}, "appId"),
        ({"workerDefaults": {"concurrency": 0}}, "/workerDefaults/concurrency"),
        ({"config": {"logLevel": "LOUD"}}, "/config/logLevel"),
        ({"secrets": {"databaseUrl": "mysql://db", "brokerUrl": "amqp://mq"}}, "databaseUrl"),
    ],
)
def test_values_the_cli_would_refuse_fail_the_install(bad: dict[str, Any], where: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=where):
        render({**URLS, **bad})
