"""Realtime across real processes: a subscriber on the API gets what a function on a worker
publishes (over RabbitMQ in cluster mode, through the API's publish route in `tideflow dev`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import subprocess
from collections.abc import Iterator
from typing import Any

import tideflow
import websockets
from helpers import TIDEFLOW, Api, Process, eventually, free_port, running

APP = """
import tideflow
from tideflow.realtime import channel, topic

client = tideflow.Client(app_id="rt")
updates = channel("job:{id}").add_topic(topic("status"))


@client.create_function(fn_id="job", trigger=tideflow.TriggerEvent(event="rt/go"))
async def job(ctx):
    job_updates = updates(id=ctx.event.data["id"])
    await ctx.publish(job_updates, "status", {"state": "started"})
    await ctx.step.run("work", lambda: 1)
    await ctx.step.sleep("nap", "50ms")
    await ctx.publish(job_updates, "status", {"state": "finished"})
    return "done"
"""

KEY = "realtime-e2e-signing-key"


async def _receive(api: Api, port: int, key: str | None) -> tuple[list[Any], list[Any]]:
    api_url, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}"
    client = tideflow.Client(
        app_id="rt",
        signing_key=key,
        settings=tideflow.Settings.from_env({"TIDEFLOW_API_URL": api_url}),
    )
    updates = tideflow.realtime.channel("job:{id}").add_topic(tideflow.realtime.topic("status"))
    token = client.realtime_token(updates(id="1"), ["status"])
    async with client.subscribe(token) as subscription:
        await subscription.ready()
        async with websockets.connect(f"{ws_url}/v1/realtime/ws?token={token}") as ws:
            assert json.loads(await ws.recv()) == {"type": "ready"}
            await asyncio.to_thread(api.send, {"name": "rt/go", "data": {"id": "1"}})
            by_sse = [await asyncio.wait_for(anext(subscription), 30) for _ in range(2)]
            by_ws = [json.loads(await asyncio.wait_for(ws.recv(), 30)) for _ in range(2)]
    return by_sse, by_ws


def _check(by_sse: list[Any], by_ws: list[Any]) -> None:
    assert [(m["channel"], m["topic"], m["data"]) for m in by_sse] == [
        ("job:1", "status", {"state": "started"}),
        ("job:1", "status", {"state": "finished"}),
    ]
    assert [{k: v for k, v in m.items() if k != "type"} for m in by_ws] == by_sse


@contextlib.contextmanager
def _cluster(tmp_path: pathlib.Path, env: dict[str, str], port: int) -> Iterator[list[Process]]:
    import os

    subprocess.run(
        [TIDEFLOW, "migrate"], cwd=tmp_path, env={**os.environ, **env}, check=True, timeout=60
    )
    with (
        running(["api", "--port", str(port)], cwd=tmp_path, env=env, name="api") as api,
        running(["scheduler"], cwd=tmp_path, env=env, name="scheduler") as scheduler,
        running(["worker", "rtapp:client"], cwd=tmp_path, env=env, name="worker") as worker,
    ):
        yield [api, scheduler, worker]


def test_an_api_subscriber_gets_what_a_worker_process_publishes(
    tmp_path: pathlib.Path, postgres_url: str, rabbitmq_url: str
) -> None:
    (tmp_path / "rtapp.py").write_text(APP)
    port = free_port()
    env = {
        "TIDEFLOW_DATABASE_URL": postgres_url,
        "TIDEFLOW_BROKER_URL": rabbitmq_url,
        "TIDEFLOW_SIGNING_KEY": KEY,
    }
    with _cluster(tmp_path, env, port) as processes, Api(port) as api:
        try:
            eventually(api.healthy, what="the API to answer")
            # Events sent before the scheduler knows the functions would start no run.
            eventually(
                lambda: "rt-job" in processes[1].output(), what="the scheduler to know the function"
            )
            by_sse, by_ws = asyncio.run(_receive(api, port, KEY))
        except Exception as exc:
            logs = "\n".join(process.output() for process in processes)
            raise AssertionError(f"{exc!r}; the processes' logs:\n{logs}") from exc
    _check(by_sse, by_ws)


def test_realtime_works_in_the_dev_engine_without_a_signing_key(tmp_path: pathlib.Path) -> None:
    (tmp_path / "rtapp.py").write_text(APP)
    port = free_port()
    env = {
        "TIDEFLOW_API_URL": f"http://127.0.0.1:{port}",
        "TIDEFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/dev.db",
    }
    with (
        running(
            ["dev", "rtapp:client", "--port", str(port)], cwd=tmp_path, env=env, name="dev"
        ) as dev,
        Api(port) as api,
    ):
        try:
            eventually(api.healthy, what="the dev engine to serve")
            by_sse, by_ws = asyncio.run(_receive(api, port, None))
        except Exception as exc:
            raise AssertionError(f"{exc!r}; the dev engine's log:\n{dev.output()}") from exc
    _check(by_sse, by_ws)
