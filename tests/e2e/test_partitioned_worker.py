"""A worker cut off from the cluster mid-step, for longer than its lease, then let back: its
steps are re-run elsewhere, its late results are refused, and nothing is lost, doubled or run
beyond its concurrency limit meanwhile."""

from __future__ import annotations

import collections
import dataclasses
import pathlib
import time
from typing import Any

import pytest
from cluster import Cluster, ClusterOf
from helpers import eventually
from netns import partition

APP = """
import os, time
import tideflow

client = tideflow.Client(app_id="part")
LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bodies.log")
# The partitioned worker's bodies outlast the moment the test cuts it off, not its lease.
WORK_S = float(os.environ.get("WORK_S", "0.2"))


def body(run_id, key, name, seconds):
    with open(LOG, "a") as log:
        log.write(f"start {run_id} {key} {name} {os.getpid()} {time.time()}\\n")
    time.sleep(seconds)
    with open(LOG, "a") as log:
        log.write(f"end {run_id} {key} {name} {os.getpid()} {time.time()}\\n")
    return os.getpid()


@client.create_function(
    fn_id="work",
    trigger=tideflow.TriggerEvent(event="part/go"),
    retries=3,
    concurrency=[tideflow.Concurrency(limit=1, key="event.data.k")],
)
def work(ctx):
    key = ctx.event.data["k"]
    pid = ctx.step.run("work", body, ctx.run_id, key, "work", WORK_S)
    ctx.step.sleep("rest", "100ms")
    ctx.step.run("after", body, ctx.run_id, key, "after", 0.05)
    return {"pid": pid, "n": ctx.event.data["n"]}
"""

LEASE_S = 3.0
WORK_S = 2.5  # under the lease: the cut-off body has ended before its step is re-run
CUT_S = 8.0  # well over the lease
KEYS = ("k0", "k1")
RUNS_PER_KEY = 3


@dataclasses.dataclass(frozen=True)
class Body:
    run_id: str
    key: str
    name: str
    pid: int
    start: float
    end: float


def bodies(directory: pathlib.Path) -> list[Body]:
    """Every step body that has ended, from the side channel the app writes."""
    log = directory / "bodies.log"
    started: dict[tuple[str, str, int], float] = {}
    ended: list[Body] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        kind, run_id, key, name, pid, at = line.split()
        if kind == "start":
            started[(run_id, name, int(pid))] = float(at)
        else:
            start = started.pop((run_id, name, int(pid)))
            ended.append(Body(run_id, key, name, int(pid), start, float(at)))
    return ended


def started_by(directory: pathlib.Path, pid: int, *, at_least: int) -> set[str] | None:
    """The runs whose bodies process `pid` has started, once there are `at_least`."""
    log = directory / "bodies.log"
    lines = log.read_text().splitlines() if log.exists() else []
    runs = {line.split()[1] for line in lines if line.startswith("start") and f" {pid} " in line}
    return runs if len(runs) >= at_least else None


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    peak = running = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_worker_cut_off_mid_step_past_its_lease_loses_nothing_and_doubles_nothing(
    cluster_of: ClusterOf, tmp_path: pathlib.Path, figures: list[str]
) -> None:
    with partition() as net:
        cluster = cluster_of(app=APP, known_function="part-work", lease_s=LEASE_S)
        # A worker registers the app's functions; it leaves before any work arrives.
        cluster.start(schedulers=1, workers=1)
        cluster.workers[0].stop()
        # Given the only worker, in the partition, reaching the servers through its veth
        cut_off = cluster.start_worker(
            prefix=net.prefix,
            env={
                "TIDEFLOW_DATABASE_URL": net.relay_url(cluster.env["TIDEFLOW_DATABASE_URL"]),
                "TIDEFLOW_BROKER_URL": net.relay_url(cluster.env["TIDEFLOW_BROKER_URL"]),
                "WORK_S": str(WORK_S),
            },
        )
        events = [
            {"name": "part/go", "data": {"k": key, "n": n}}
            for n, key in enumerate(KEYS * RUNS_PER_KEY)
        ]
        event_ids = cluster.send(events)
        # When it is cut off in the middle of a step of each key
        victims = eventually(
            lambda: started_by(tmp_path, cut_off.popen.pid, at_least=len(KEYS)),
            what="the partitioned worker to start a step of each key",
        )
        net.cut()
        cut_at = time.monotonic()
        cluster.start_worker()
        time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
        net.restore()
        # Then every run ends, and the cut-off worker's late results are refused once it is back
        runs = cluster.wait_for_all(event_ids, timeout_s=120)
        eventually(
            lambda: cut_off.output().count("its result is dropped") >= len(victims),
            timeout_s=90,
            what="the cut-off worker's late results to be refused",
        )
        assert cut_off.popen.poll() is None, "the cut-off worker died instead of coming back"
        report(cluster, runs, victims, tmp_path, cut_off.popen.pid, figures)


def report(
    cluster: Cluster,
    runs: dict[str, dict[str, Any]],
    victims: set[str],
    directory: pathlib.Path,
    cut_pid: int,
    figures: list[str],
) -> None:
    """Prints the figures, then checks them: no run lost, no step recorded twice, no key over
    its limit, and each cut step re-run elsewhere with that result recorded."""
    ended = bodies(directory)
    statuses = collections.Counter(str(run["status"]) for run in runs.values())
    duplicates = 0
    for run in runs.values():
        names = [step["name"] for step in cluster.api.steps(str(run["run_id"]))]
        duplicates += len(names) - len(set(names))
        assert sorted(names) == ["after", "rest", "work"], names
    peaks = {key: most_at_once([(b.start, b.end) for b in ended if b.key == key]) for key in KEYS}
    reruns = {
        run_id: [b.pid for b in ended if b.run_id == run_id and b.name == "work"]
        for run_id in victims
    }
    recorded = {
        str(run["run_id"]): run["output"]["pid"]
        for run in runs.values()
        if run["run_id"] in victims
    }
    figures.append(
        f"partitioned worker: {len(runs)} runs, {len(victims)} cut mid-step for {CUT_S}s "
        f"(lease {LEASE_S}s); statuses {dict(statuses)}; runs lost "
        f"{len(runs) - statuses['Completed']}; steps recorded twice {duplicates}; "
        f"most bodies at once per key {peaks}; work bodies of the cut runs by pid {reruns}"
    )
    assert statuses == {"Completed": len(KEYS) * RUNS_PER_KEY}
    assert duplicates == 0
    assert peaks == dict.fromkeys(KEYS, 1)
    for run_id, pids in reruns.items():
        # The cut-off body ran to its end; the step was run again by another worker, whose
        # result is the one recorded.
        assert pids[0] == cut_pid, pids
        assert len(pids) >= 2, pids
        assert recorded[run_id] != cut_pid
        assert recorded[run_id] in pids[1:]
