"""The `tideflow` command as a user runs it."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess

from helpers import TIDEFLOW, Api, eventually, free_port, running

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_send_posts_an_event_that_starts_a_run_of_the_dev_engine(tmp_path: pathlib.Path) -> None:
    port = free_port()
    env = {
        "TIDEFLOW_API_URL": f"http://127.0.0.1:{port}",
        "TIDEFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/dev.db",
    }
    with (
        running(
            ["dev", "examples.shop:client", "--port", str(port)],
            cwd=ROOT,
            env=env,
            name="dev",
            log_dir=tmp_path,
        ),
        Api(port) as api,
    ):
        eventually(api.healthy, what="the dev engine to serve")
        sent = subprocess.run(
            [TIDEFLOW, "send", "shop/order.placed", "--data", '{"total": 12}'],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
        (event_id,) = sent.stdout.split()
        run = eventually(lambda: api.runs(event_id), what="the order's run")[0]
        ended = eventually(
            lambda: api.run(run["run_id"])["status"] == "Completed" and api.run(run["run_id"]),
            what="the run to end",
        )
        refused = subprocess.run(
            [TIDEFLOW, "send", "shop/order.placed", "--data", "{oops"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
        )

    assert ended["output"] == {"total": 12}
    assert refused.returncode == 2
    assert "--data is not valid JSON" in refused.stderr


def test_commands_report_bad_input_without_a_traceback(tmp_path: pathlib.Path) -> None:
    bad_app = subprocess.run(
        [TIDEFLOW, "worker", "no_such_module:client"], cwd=tmp_path, capture_output=True, text=True
    )
    bad_url = subprocess.run(
        [TIDEFLOW, "migrate"],
        env={**os.environ, "TIDEFLOW_DATABASE_URL": "mysql://x"},
        capture_output=True,
        text=True,
    )

    assert (bad_app.returncode, bad_url.returncode) == (2, 2)
    assert "cannot import 'no_such_module'" in bad_app.stderr
    assert "is neither sqlite:/// nor postgresql://" in bad_url.stderr
    assert "Traceback" not in bad_app.stderr + bad_url.stderr


async def test_migrate_declares_the_broker_topology_so_early_events_are_kept(
    postgres_url: str, rabbitmq_url: str
) -> None:
    import aio_pika

    env = {**os.environ, "TIDEFLOW_DATABASE_URL": postgres_url, "TIDEFLOW_BROKER_URL": rabbitmq_url}
    for _ in range(2):  # idempotent
        migrated = await asyncio.to_thread(
            subprocess.run,
            [TIDEFLOW, "migrate"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrated.returncode == 0, migrated.stderr

    connection = await aio_pika.connect_robust(rabbitmq_url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("tideflow.events")
        # mandatory: an event no queue would take is returned as an error, not dropped
        await exchange.publish(
            aio_pika.Message(b'{"name": "early/bird"}'), routing_key="early/bird", mandatory=True
        )
        queue = await channel.get_queue("tideflow.scheduler.events")
        message = await queue.get(timeout=5)

    assert message is not None
    assert message.body == b'{"name": "early/bird"}'
