"""The quickstart works as a new user would follow it: its `app.py` under `tideflow dev`, and its
first event sent with `tideflow send`, as real processes."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import subprocess

from helpers import TIDEFLOW, Api, eventually, free_port, running

PAGE = pathlib.Path(__file__).resolve().parents[2] / "docs" / "guides" / "quickstart.md"
DEV = "tideflow dev app:client"
SEND = """tideflow send hello/user.signed_up --data '{"name": "Ada"}'"""


def test_the_quickstart_app_runs_under_tideflow_dev_and_its_first_event_completes(
    tmp_path: pathlib.Path,
) -> None:
    text = PAGE.read_text()
    assert DEV in text
    assert SEND in text
    app = re.search(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert app is not None
    (tmp_path / "app.py").write_text(app[1])
    port = free_port()
    env = {
        "TIDEFLOW_API_URL": f"http://127.0.0.1:{port}",
        "TIDEFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/dev.db",
    }

    with (
        running([*shlex.split(DEV)[1:], "--port", str(port)], cwd=tmp_path, env=env, name="dev"),
        Api(port) as api,
    ):
        eventually(api.healthy, what="tideflow dev to answer /health")
        sent = subprocess.run(
            [TIDEFLOW, *shlex.split(SEND)[1:]],
            cwd=tmp_path,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        (event_id,) = sent.stdout.split()
        (run,) = eventually(lambda: api.runs(event_id), what="the event's run")
        ended = eventually(
            lambda: (r := api.run(run["run_id"]))["status"] == "Completed" and r,
            what="the run to complete",
        )

    assert ended["output"] == {"greeting": "Hello, Ada!"}
    assert ended["function_id"] == "hello-greet"
