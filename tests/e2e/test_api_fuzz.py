"""schemathesis against a live engine (`tideflow dev`) on each backend: every answer has a
documented status and content type, conforms to its schema, and none is a 5xx.

The run is bounded (`TIDEFLOW_FUZZ_EXAMPLES` cases per operation, 10 by default) so that CI
stays quick, with a fixed seed; `scripts/fuzz-api --examples N` runs it longer on a random
seed. `TIDEFLOW_FUZZ_SEED` replays the seed a run printed.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import pytest
from helpers import Api, eventually, free_port, running

SCHEMATHESIS = str(pathlib.Path(sys.executable).with_name("schemathesis"))
SIGNING_KEY = "sk-fuzz-signing"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)
# Not fuzzed: a WebSocket (OpenAPI cannot call it) and a stream that lasts 20 s by design.
NOT_FUZZED = ("/v1/realtime/ws", "/v1/stream")
CI_SEED = "20261201"
"""CI replays the same cases, a regression gate; `scripts/fuzz-api` explores new ones."""

APP = """
import tideflow

client = tideflow.Client(app_id="fuzz")


@client.create_function(fn_id="ok", trigger=tideflow.TriggerEvent(event="fuzz/ok"), retries=0)
def ok(ctx):
    return {"a": ctx.step.run("a", lambda: {"n": ctx.event.data.get("n", 0)})}


@client.create_function(fn_id="bad", trigger=tideflow.TriggerEvent(event="fuzz/bad"), retries=0)
def bad(ctx):
    ctx.step.run("boom", lambda: 1 / 0)


@client.create_function(fn_id="wait", trigger=tideflow.TriggerEvent(event="fuzz/wait"))
def wait(ctx):
    return ctx.step.wait_for_signal("poke", signal=f"poke-{ctx.event.data['n']}", timeout="1h")
"""


def _examples() -> int:
    return int(os.environ.get("TIDEFLOW_FUZZ_EXAMPLES", "10"))


def _seed(api: Api) -> dict[str, list[str]]:
    """Runs in each state (completed, failed, waiting), so that listings and the ids the fuzzer
    draws on lead to real rows."""
    event_ids = api.send(
        *(
            {"name": f"fuzz/{kind}", "data": {"n": n}}
            for kind in ("ok", "bad", "wait")
            for n in range(2)
        )
    )
    runs = [eventually(lambda e=e: api.runs(e), what=f"a run of {e}")[0] for e in event_ids]
    for run in runs:
        eventually(
            lambda r=run: api.steps(r["run_id"]) and api.run(r["run_id"])["status"] != "Queued",
            what=f"run {run['run_id']} to start",
        )
    return {
        "event_ids": event_ids,
        "run_ids": [run["run_id"] for run in runs],
        "function_ids": ["fuzz-ok", "fuzz-bad", "fuzz-wait"],
    }


def _config(path: pathlib.Path, known: dict[str, list[str]]) -> pathlib.Path:
    # Half the cases use an id that exists, half a generated one (mostly a 404).
    lines = []
    for name, values in known.items():
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values)}", ""]
    lines.append("[parameters]")
    for param, name in (
        ("run_id", "run_ids"),
        ("event_id", "event_ids"),
        ("function_id", "function_ids"),
    ):
        lines.append(f'"path.{param}" = {{ dictionary = "{name}", probability = 0.5 }}')
    path.write_text("\n".join(lines) + "\n")
    return path


def _schemathesis(
    port: int, config: pathlib.Path, report: pathlib.Path
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    args = [
        SCHEMATHESIS,
        "--config-file",
        str(config),
        "run",
        f"http://127.0.0.1:{port}/openapi.json",
        "--header",
        f"Authorization: Bearer {SIGNING_KEY}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(_examples()),
        "--workers",
        "1",
        "--report",
        "json",
        "--report-json-path",
        str(report),
        *(arg for path in NOT_FUZZED for arg in ("--exclude-path", path)),
    ]
    seed = os.environ.get("TIDEFLOW_FUZZ_SEED", CI_SEED)
    if seed != "random":
        args += ["--seed", seed]
    # In the test's directory: schemathesis keeps a crash cache in its working directory.
    done = subprocess.run(
        args, capture_output=True, text=True, timeout=600, check=False, cwd=report.parent
    )
    return done, json.loads(report.read_text())


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_answer_of_the_live_api_is_documented_and_none_is_a_server_error(
    backend: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path, figures: list[str]
) -> None:
    # Given a live engine on the backend, with runs in each state
    if backend == "sqlite":
        env = {"TIDEFLOW_DATABASE_URL": f"sqlite:///{tmp_path / 'fuzz.db'}"}
    else:
        env = {
            "TIDEFLOW_DATABASE_URL": request.getfixturevalue("postgres_url"),
            "TIDEFLOW_BROKER_URL": request.getfixturevalue("rabbitmq_url"),
        }
    env |= {"TIDEFLOW_SIGNING_KEY": SIGNING_KEY, "TIDEFLOW_LOG_LEVEL": "WARNING"}
    (tmp_path / "fuzzapp.py").write_text(APP)
    port = free_port()
    args = ["dev", "fuzzapp:client", "--port", str(port)]
    with running(args, cwd=tmp_path, env=env, name="dev") as dev, Api(port) as api:
        api.http.headers["Authorization"] = f"Bearer {SIGNING_KEY}"
        eventually(api.healthy, what="the engine to answer")
        known = _seed(api)

        # When schemathesis runs its cases against it
        done, report = _schemathesis(
            port, _config(tmp_path / "st.toml", known), tmp_path / "st.json"
        )
        log = dev.output()

    # Then every check passed on every case
    cases = report["test_cases"]
    figures.append(
        f"schemathesis {backend}: {cases['generated']} cases over "
        f"{report['operations']['tested']} operations ({_examples()} examples each, seed "
        f"{report['seed']}), {cases['with_failures']} failed, {len(report['errors'])} errors"
    )
    assert done.returncode == 0, done.stdout[-6000:]
    assert cases["with_failures"] == 0, done.stdout[-6000:]
    assert report["errors"] == [], done.stdout[-6000:]
    assert report["operations"]["tested"] == report["operations"]["selected"] > 25
    assert "Exception in ASGI application" not in log, log[-4000:]
