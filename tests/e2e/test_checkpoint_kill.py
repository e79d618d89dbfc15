"""A worker killed (SIGKILL) during the second of two steps runs the first again never: its
result was written while the second ran. The same after a parallel group. On the embedded
default (`tideflow dev`) and on a cluster (PostgreSQL + RabbitMQ)."""

from __future__ import annotations

import collections
import pathlib
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest
from cluster import Cluster
from helpers import FAILED, Api, Process, eventually, free_port

APP = textwrap.dedent(
    """
    import os, time
    import tideflow

    client = tideflow.Client(app_id="kill")
    LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bodies.log")


    def body(run_id, name, slow_s):
        seen = open(LOG).read().split("\\n") if os.path.exists(LOG) else []
        with open(LOG, "a") as log:
            log.write(f"{run_id} {name}\\n")
        if f"{run_id} {name}" not in seen:
            time.sleep(slow_s)  # only the first execution is slow
        return name


    @client.create_function(fn_id="pair", trigger=tideflow.TriggerEvent(event="kill/pair"))
    def pair(ctx):
        a = ctx.step.run("a", body, ctx.run_id, "a", 0)
        b = ctx.step.run("b", body, ctx.run_id, "b", 60)
        return [a, b]


    @client.create_function(fn_id="group", trigger=tideflow.TriggerEvent(event="kill/group"))
    def group(ctx):
        x, y = ctx.group.parallel(
            (
                lambda: ctx.step.run("x", body, ctx.run_id, "x", 0),
                lambda: ctx.step.run("y", body, ctx.run_id, "y", 0),
            )
        )
        b = ctx.step.run("b", body, ctx.run_id, "b", 60)
        return [x, y, b]
    """
)
ENV = {"TIDEFLOW_LEASE_S": "2", "TIDEFLOW_LOG_LEVEL": "INFO"}


class Deployment:
    """Where the app runs: something to kill -9 mid-step and something to start again."""

    def __init__(self, api: Api, start: Callable[[], Process], log: pathlib.Path) -> None:
        self.api = api
        self.start = start
        self.log = log


@pytest.fixture(params=["dev", "cluster"])
def deployment(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Deployment]:
    processes: list[Process] = []
    if request.param == "dev":
        (tmp_path / "killapp.py").write_text(APP)
        port = free_port()
        api = Api(port)

        def start_dev() -> Process:
            args = ["dev", "killapp:client", "--port", str(port)]
            process = Process(args, cwd=tmp_path, env=ENV, name=f"dev-{len(processes)}")
            processes.append(process)
            eventually(api.healthy, what="the dev engine to serve")
            return process

        with api:
            yield Deployment(api, start_dev, tmp_path / "bodies.log")
    else:
        cluster = Cluster(
            tmp_path,
            database_url=request.getfixturevalue("postgres_url"),
            broker_url=request.getfixturevalue("rabbitmq_url"),
            lease_s=2,
            app=APP,
            known_function="kill-pair",
        )
        # The schedulers learn the functions from the first worker, started here.
        cluster.start(schedulers=1, workers=1)
        first = [cluster.workers[0]]

        def next_worker() -> Process:
            return first.pop() if first else cluster.start_worker()

        processes = cluster.processes
        try:
            yield Deployment(cluster.api, next_worker, tmp_path / "bodies.log")
        finally:
            cluster.api.http.close()
    for process in processes:
        process.stop()
    if request.node.stash.get(FAILED, False):
        sys.stderr.write(
            "\n".join(f"== {p.log_path.name}\n{p.output()[-4000:]}" for p in processes)
        )


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(("event", "before"), [("kill/pair", ["a"]), ("kill/group", ["x", "y"])])
def test_a_step_that_returned_is_not_run_again_after_a_kill_during_the_next(
    deployment: Deployment, event: str, before: list[str]
) -> None:
    # Given a run whose first steps have returned and whose next step is executing
    victim = deployment.start()
    (event_id,) = deployment.api.send({"name": event})
    run_id = eventually(lambda: deployment.api.runs(event_id), what="the run")[0]["run_id"]
    eventually(
        lambda: deployment.log.exists() and f"{run_id} b" in deployment.log.read_text(),
        what="step b to start",
    )
    recorded = eventually(
        lambda: (
            [
                s["name"]
                for s in deployment.api.steps(run_id)
                if s["status"] == "Completed" and s["name"] in before
            ]
            if len([s for s in deployment.api.steps(run_id) if s["name"] in before]) == len(before)
            else None
        ),
        what="the first steps to be written while b runs",
    )

    # When the process running it is killed outright, and another takes over
    victim.kill()
    deployment.start()
    finished = eventually(
        lambda: (
            deployment.api.run(run_id)["status"] in ("Completed", "Failed")
            and deployment.api.run(run_id)
        ),
        timeout_s=60,
        what="the run to end",
    )

    # Then the first steps ran once, and only the interrupted one ran again
    executions = collections.Counter(
        tuple(line.split()) for line in deployment.log.read_text().splitlines()
    )
    assert finished["status"] == "Completed"
    assert finished["output"] == [*before, "b"]
    assert sorted(recorded) == before
    assert {name: executions[(run_id, name)] for name in [*before, "b"]} == {
        **dict.fromkeys(before, 1),
        "b": 2,
    }
