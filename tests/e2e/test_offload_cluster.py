"""Offloaded steps on a cluster of real processes (PostgreSQL + RabbitMQ): a worker killed
(SIGKILL) while it makes a request leaves it to another, and once recorded, no replay makes it
again, not after another kill either; an `ai.infer` step's API key reaches the provider and
no row, no log line."""

from __future__ import annotations

import pathlib
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from cluster import ClusterOf
from helpers import eventually

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "behaviour"))
from http_fake import FakeServer, fake_server

SECRET = "sk-e2e-4f1c9a7d-never-stored"

APP = textwrap.dedent(
    """
    import os, time
    import tideflow

    client = tideflow.Client(app_id="offload")
    LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bodies.log")
    URL = {url!r}
    KEY = {key!r}


    def body(run_id, name):
        seen = open(LOG).read().split("\\n") if os.path.exists(LOG) else []
        with open(LOG, "a") as log:
            log.write(f"{{run_id}} {{name}}\\n")
        if f"{{run_id}} {{name}}" not in seen:
            time.sleep(60)  # only the first execution is slow
        return name


    @client.create_function(fn_id="flow", trigger=tideflow.TriggerEvent(event="offload/go"))
    def flow(ctx):
        slow = ctx.step.fetch("slow", URL + "/slow?s=4")
        adapter = tideflow.ai.OpenAI("tiny-model", api_key=KEY, base_url=URL + "/v1")
        answer = ctx.step.ai.infer(
            "ask", adapter=adapter, body={{"messages": [{{"role": "user", "content": "hi"}}]}}
        )
        after = ctx.step.run("after", body, ctx.run_id, "after")
        return [slow["body"], answer["choices"][0]["message"]["content"], after]
    """
)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    with fake_server() as running:
        yield running


def _rows_mentioning(database_url: str, text: str) -> list[str]:
    with psycopg.connect(database_url) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        found = []
        for table in tables:
            query = f'SELECT t::text FROM "{table}" t'  # table names from the catalogue
            found += [f"{table}: {row[0]}" for row in connection.execute(query) if text in row[0]]
    return found


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_offloaded_requests_survive_kills_and_are_never_repeated_once_recorded(
    cluster_of: ClusterOf, server: FakeServer, tmp_path: pathlib.Path, postgres_url: str
) -> None:
    # Given a cluster whose only worker is making a slow offloaded request
    cluster = cluster_of(
        app=APP.format(url=server.url, key=SECRET), known_function="offload-flow", lease_s=2
    )
    cluster.env["TIDEFLOW_LOG_LEVEL"] = "DEBUG"  # not even a debug line shows the key
    # With a signing key, as a cluster has, the key also leaves the worker sealed.
    cluster.env["TIDEFLOW_SIGNING_KEY"] = "e2e-signing-key"
    cluster.api.http.headers["Authorization"] = "Bearer e2e-signing-key"
    cluster.start(schedulers=1, workers=1)
    (event_id,) = cluster.send([{"name": "offload/go"}])
    eventually(lambda: server.seen.in_flight == 1, what="the slow request to be in flight")

    # When that worker is killed outright, another takes the request over
    cluster.workers[0].kill()
    cluster.start_worker()
    log = tmp_path / "bodies.log"
    eventually(lambda: log.exists() and "after" in log.read_text(), timeout_s=60, what="step after")
    # and when that one is killed too, during a later step, a third finishes the run
    cluster.workers[1].kill()
    cluster.start_worker()
    (run,) = cluster.wait_for_all([event_id], timeout_s=60).values()

    # Then each request was made once more only where it was cut off, and never replayed
    assert run["status"] == "Completed", cluster.logs()
    assert run["output"] == [{"slow": True}, "hi there", "after"]
    assert server.seen.hits["/slow"] == 2
    assert server.seen.hits["/v1/chat/completions"] == 1
    steps: list[dict[str, Any]] = cluster.api.steps(run["run_id"])
    assert [(s["name"], s["op"], s["attempt"]) for s in steps] == [
        ("slow", "fetch", 0),
        ("ask", "ai_infer", 0),
        ("after", "run", 0),
    ]
    assert steps[1]["ai"]["usage"] == {"prompt_tokens": 12, "completion_tokens": 5}

    # and the key reached the provider, but no row and no process's log
    chat = [r for r in server.seen.requests if r["path"] == "/v1/chat/completions"]
    assert chat[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert _rows_mentioning(postgres_url, SECRET) == []
    assert SECRET not in cluster.logs()
    assert all(SECRET not in process.output() for process in cluster.processes)
