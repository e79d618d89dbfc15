"""`tideflow dev` killed with SIGKILL while runs sleep or are mid-step loses nothing."""

from __future__ import annotations

import collections
import pathlib
import textwrap

import pytest
from helpers import Api, eventually, free_port, running

APP = textwrap.dedent(
    """
    import os, time
    import tideflow

    client = tideflow.Client(app_id="crash")
    LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bodies.log")


    def body(run_id, name, seconds):
        with open(LOG, "a") as log:
            log.write(f"{run_id} {name}\\n")
        time.sleep(seconds)
        return name


    @client.create_function(fn_id="durable", trigger=tideflow.TriggerEvent(event="crash/go"), retries=2)
    def durable(ctx):
        first = ctx.step.run("first", body, ctx.run_id, "first", 0)
        ctx.step.sleep("nap", "3s")
        slow = ctx.step.run("slow", body, ctx.run_id, "slow", ctx.event.data["slow_s"])
        last = ctx.step.run("last", body, ctx.run_id, "last", 0)
        return [first, slow, last]
    """
)


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_sigkill_during_sleeps_and_steps_loses_no_run_and_reruns_no_recorded_step(
    tmp_path: pathlib.Path,
) -> None:
    (tmp_path / "crashapp.py").write_text(APP)
    port = free_port()
    env = {
        "TIDEFLOW_LEASE_S": "2",
        "TIDEFLOW_RETRY_BACKOFF_BASE_MS": "100",
        "TIDEFLOW_LOG_LEVEL": "WARNING",
    }
    args = ["dev", "crashapp:client", "--port", str(port)]
    with Api(port) as api:
        _crash_and_recover(tmp_path, args, env, api)


def _crash_and_recover(
    tmp_path: pathlib.Path, args: list[str], env: dict[str, str], api: Api
) -> None:
    # Given runs that are sleeping, and one whose slow step is executing
    with running(args, cwd=tmp_path, env=env, name="dev-1") as first:
        eventually(api.healthy, what="first dev process to serve")
        sleeping = api.send(*({"name": "crash/go", "data": {"slow_s": 0}} for _ in range(5)))
        eventually(lambda: all(api.runs(e) for e in sleeping), what="runs to start")
        run_ids = [api.runs(e)[0]["run_id"] for e in sleeping]
        eventually(
            lambda: all(
                any(s["name"] == "nap" and s["status"] == "Waiting" for s in api.steps(r))
                for r in run_ids
            ),
            what="runs to sleep",
        )
        (busy_event,) = api.send({"name": "crash/go", "data": {"slow_s": 6}})
        busy_run = eventually(lambda: api.runs(busy_event), what="busy run")[0]["run_id"]
        run_ids.append(busy_run)
        log = tmp_path / "bodies.log"
        eventually(
            lambda: f"{busy_run} slow" in log.read_text(), timeout_s=20, what="slow step to start"
        )
        recorded = {
            (r, s["name"])
            for r in run_ids
            for s in api.steps(r)
            if s["status"] == "Completed" and s["op"] == "run"
        }

        # When the process is killed outright, then started again
        first.kill()
    with running(args, cwd=tmp_path, env=env, name="dev-2"):
        eventually(api.healthy, what="second dev process to serve")

        # Then every run completes, and no step recorded before the kill ran again
        finished = {
            r: eventually(
                lambda r=r: api.run(r)["status"] in ("Completed", "Failed") and api.run(r),
                timeout_s=60,
                what=f"run {r}",
            )
            for r in run_ids
        }

    assert {r: run["status"] for r, run in finished.items()} == dict.fromkeys(run_ids, "Completed")
    assert all(run["output"] == ["first", "slow", "last"] for run in finished.values())
    executions = collections.Counter(tuple(line.split()) for line in log.read_text().splitlines())
    assert recorded, "the kill came before any step was recorded"
    assert {step: executions[step] for step in recorded} == dict.fromkeys(recorded, 1)
    assert executions[(busy_run, "slow")] == 2  # it was mid-step at the kill: run again, as it must
