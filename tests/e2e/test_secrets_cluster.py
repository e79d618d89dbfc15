"""Secrets stay secret: a full cluster configured with a signing key, an event key, a PostgreSQL
role with a password and a RabbitMQ user with a password is driven through good traffic and
errors, at DEBUG; then every process's log, every /metrics page, every answer (errors included)
and the dashboard's pages are searched for each secret. Processes given a wrong password are
searched too: they print the URL they cannot reach, masked."""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
from cluster import APP, Cluster
from helpers import FAILED, TIDEFLOW, eventually

SIGNING_KEY = f"signkey{uuid.uuid4().hex}"
EVENT_KEY = f"eventkey{uuid.uuid4().hex}"
FAILING_APP = (
    APP
    + """

@client.create_function(fn_id="fails", trigger=tideflow.TriggerEvent(event="cluster/fail"), retries=0)
def fails(ctx):
    ctx.step.run("boom", lambda: 1 / 0)
"""
)


@dataclasses.dataclass(frozen=True)
class Credentials:
    database_url: str
    broker_url: str
    database_password: str
    broker_password: str


def _psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", sql],
        check=True,
        capture_output=True,
    )


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def credentials(postgres_url: str, rabbitmq_url: str) -> Iterator[Credentials]:
    """A PostgreSQL role owning the test's database and a RabbitMQ user of the test's vhost,
    each with a password; both removed afterwards."""
    tag = uuid.uuid4().hex[:10]
    role, db_password = f"tf_secret_{tag}", f"dbpass{uuid.uuid4().hex}"
    user, mq_password = f"tf-secret-{tag}", f"mqpass{uuid.uuid4().hex}"
    database = postgres_url.rsplit("/", 1)[1]
    vhost = rabbitmq_url.rsplit("/", 1)[1]
    _psql(f"CREATE ROLE {role} LOGIN PASSWORD '{db_password}'")
    _psql(f'ALTER DATABASE "{database}" OWNER TO {role}')
    _rabbitmqctl("add_user", user, mq_password)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        yield Credentials(
            database_url=f"postgresql://{role}:{db_password}@127.0.0.1:5432/{database}",
            broker_url=f"amqp://{user}:{mq_password}@127.0.0.1:5672/{vhost}",
            database_password=db_password,
            broker_password=mq_password,
        )
    finally:
        _rabbitmqctl("delete_user", user)
        _psql(f"REASSIGN OWNED BY {role} TO postgres; DROP OWNED BY {role}", database)
        _psql(f'ALTER DATABASE "{database}" OWNER TO postgres')
        _psql(f"DROP ROLE {role}")


class Traffic:
    """Requests to the cluster's API; keeps every answer's text to search."""

    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
        self.texts: list[str] = []

    def __call__(self, method: str, path: str, **options: object) -> httpx.Response:
        answer = self.http.request(method, path, **options)  # type: ignore[arg-type]
        # The answer only: the request holds the keys it was sent with.
        self.texts.append(f"{answer.status_code} {answer.headers}\n{answer.text}")
        return answer


def _drive(traffic: Traffic, cluster: Cluster) -> dict[str, int]:
    """Good traffic and errors of each kind; returns the statuses seen, by kind."""
    key = {"Authorization": f"Bearer {SIGNING_KEY}"}
    sent = traffic(
        "POST", f"/e/{EVENT_KEY}", json=[{"name": "cluster/go", "data": {"n": n}} for n in range(5)]
    )
    failed = traffic("POST", f"/e/{EVENT_KEY}", json={"name": "cluster/fail"})
    ids = [*sent.json()["ids"], *failed.json()["ids"]]

    def ended(event_id: str) -> bool:
        runs = traffic("GET", f"/v1/events/{event_id}/runs", headers=key).json()["data"]
        assert len(runs) <= 1, f"event {event_id} started {len(runs)} runs"
        return bool(runs) and runs[0]["status"] in ("Completed", "Failed")

    for event_id in ids:
        eventually(lambda e=event_id: ended(e), timeout_s=60, what=f"the run of {event_id}")
    runs = traffic("GET", "/v1/runs", headers=key).json()["data"]
    for run in runs:
        traffic("GET", f"/v1/runs/{run['run_id']}/steps", headers=key)
    statuses = {
        "wrong event key": traffic("POST", "/e/not-the-key", json={"name": "x"}).status_code,
        "no signing key": traffic("GET", "/v1/runs").status_code,
        "wrong signing key": traffic(
            "GET", "/v1/runs", headers={"Authorization": "Bearer no"}
        ).status_code,
        "bad JSON": traffic("POST", f"/e/{EVENT_KEY}", content=b"{").status_code,
        "unknown signal": traffic(
            "POST", "/v1/signals", headers=key, json={"signal": "none"}
        ).status_code,
        "wrong login": traffic("POST", "/login", data={"key": "nope"}).status_code,
    }
    login = traffic(
        "POST", "/login", data={"key": SIGNING_KEY, "next": "/"}, follow_redirects=False
    )
    session = f"tideflow_session={login.cookies['tideflow_session']}"
    pages = [
        "/",
        "/functions",
        "/events",
        "/status",
        f"/runs/{runs[0]['run_id']}",
        f"/events/{ids[0]}",
    ]
    for page in pages:
        assert traffic("GET", page, headers={"Cookie": session}).status_code == 200, page
    traffic("GET", "/metrics")
    # Schedulers and workers serve their metrics on ports of their own (the API on its own).
    for name in [*(f"scheduler-{n}" for n in range(len(cluster.schedulers))), "worker-0"]:
        traffic.texts.append(
            httpx.get(f"http://127.0.0.1:{cluster.metrics_ports[name]}/metrics").text
        )
    assert sorted(run["status"] for run in runs) == ["Completed"] * 5 + ["Failed"]
    return statuses


def _unreachable(tmp_path: pathlib.Path, credentials: Credentials) -> tuple[list[str], list[str]]:
    """Processes started with a wrong password (broker) or an unreachable database: their
    output, and the wrong passwords given."""
    wrong_mq, wrong_db = f"wrongmq{uuid.uuid4().hex}", f"wrongdb{uuid.uuid4().hex}"
    user_part = credentials.broker_url.split("//", 1)[1].split(":", 1)[0]
    vhost = credentials.broker_url.rsplit("/", 1)[1]
    attempts = {
        "scheduler": {
            "TIDEFLOW_DATABASE_URL": credentials.database_url,
            "TIDEFLOW_BROKER_URL": f"amqp://{user_part}:{wrong_mq}@127.0.0.1:5672/{vhost}",
        },
        "migrate": {"TIDEFLOW_DATABASE_URL": f"postgresql://someone:{wrong_db}@127.0.0.1:1/db"},
    }
    outputs = []
    for command, env in attempts.items():
        done = subprocess.run(
            [TIDEFLOW, command],
            cwd=tmp_path,
            env={
                **os.environ,
                **env,
                "TIDEFLOW_CONNECT_TIMEOUT_S": "3",
                "TIDEFLOW_LOG_LEVEL": "DEBUG",
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode != 0, f"{command} started with a wrong password"
        assert "***" in done.stdout + done.stderr, f"{command} did not show the masked URL"
        outputs.append(done.stdout + done.stderr)
    return outputs, [wrong_mq, wrong_db]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_no_secret_appears_in_logs_metrics_answers_or_the_dashboard(
    credentials: Credentials,
    tmp_path: pathlib.Path,
    request: pytest.FixtureRequest,
    figures: list[str],
) -> None:
    # Given a cluster configured with every kind of secret, logging at DEBUG
    cluster = Cluster(
        tmp_path,
        database_url=credentials.database_url,
        broker_url=credentials.broker_url,
        app=FAILING_APP,
    )
    cluster.env |= {
        "TIDEFLOW_SIGNING_KEY": SIGNING_KEY,
        "TIDEFLOW_EVENT_KEY": EVENT_KEY,
        "TIDEFLOW_LOG_LEVEL": "DEBUG",
    }
    traffic = Traffic(cluster.port)
    try:
        # When it serves good traffic and errors, and processes fail to connect
        cluster.start(schedulers=1, workers=1)
        statuses = _drive(traffic, cluster)
        failing_outputs, wrong_passwords = _unreachable(tmp_path, credentials)
    finally:
        cluster.stop()
        traffic.http.close()
        if request.node.stash.get(FAILED, False):
            sys.stderr.write(cluster.logs())

    # Then no secret is in any of it
    logs = [process.output() for process in cluster.processes]
    texts = [*logs, *traffic.texts, *failing_outputs]
    secrets = {
        "signing key": SIGNING_KEY,
        "event key": EVENT_KEY,
        "database password": credentials.database_password,
        "broker password": credentials.broker_password,
        "wrong broker password": wrong_passwords[0],
        "wrong database password": wrong_passwords[1],
    }
    found = {name: sum(text.count(secret) for text in texts) for name, secret in secrets.items()}
    figures.append(
        f"secrets: {len(secrets)} secrets searched in {len(logs)} process logs, "
        f"{len(traffic.texts)} answers/metrics pages and {len(failing_outputs)} failed starts "
        f"({sum(map(len, texts))} characters): {sum(found.values())} found"
    )
    leaks = [
        text[max(0, i - 300) : i + 100]
        for text in texts
        for secret in secrets.values()
        if (i := text.find(secret)) >= 0
    ]
    assert found == dict.fromkeys(secrets, 0), leaks[:3]
    assert statuses == {
        "wrong event key": 401,
        "no signing key": 401,
        "wrong signing key": 401,
        "bad JSON": 400,
        "unknown signal": 404,
        "wrong login": 401,
    }
