"""`tideflow migrate` declares every durable queue as a quorum queue, and meets a queue of the
same name declared otherwise (a classic queue of an earlier tideflow) with a clear error."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys
import urllib.parse

import aio_pika
import pytest
from tideflow.broker import topology

pytestmark = [pytest.mark.postgres, pytest.mark.rabbitmq]

TIDEFLOW = str(pathlib.Path(sys.executable).parent / "tideflow")


def migrate(postgres_url: str, rabbitmq_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "TIDEFLOW_DATABASE_URL": postgres_url,
        "TIDEFLOW_BROKER_URL": rabbitmq_url,
        "TIDEFLOW_CONNECT_TIMEOUT_S": "10",
    }
    return subprocess.run(
        [TIDEFLOW, "migrate"], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def queue_types(rabbitmq_url: str) -> dict[str, str]:
    vhost = urllib.parse.urlsplit(rabbitmq_url).path[1:]
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "-p", vhost, "name", "type", "--formatter", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {row["name"]: row["type"] for row in json.loads(listed.stdout)}


def test_migrate_declares_every_durable_queue_as_a_quorum_queue(
    postgres_url: str, rabbitmq_url: str
) -> None:
    done = migrate(postgres_url, rabbitmq_url)

    assert done.returncode == 0, done.stderr
    assert queue_types(rabbitmq_url) == {
        topology.SCHEDULER_EVENTS_QUEUE: "quorum",
        topology.SCHEDULER_OUTCOMES_QUEUE: "quorum",
        topology.SCHEDULER_OFFLOADED_QUEUE: "quorum",
        topology.DEAD_LETTER_QUEUE: "quorum",
    }


async def declare_classic(rabbitmq_url: str, queue: str) -> None:
    # As an earlier tideflow declared it: durable, with no queue type.
    async with await aio_pika.connect(rabbitmq_url) as connection:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True)


def test_migrate_refuses_a_classic_queue_of_the_same_name_and_says_what_to_do(
    postgres_url: str, rabbitmq_url: str
) -> None:
    asyncio.run(declare_classic(rabbitmq_url, topology.SCHEDULER_EVENTS_QUEUE))

    refused = migrate(postgres_url, rabbitmq_url)

    assert refused.returncode == 2
    message = refused.stderr.strip().splitlines()[-1]
    vhost = urllib.parse.urlsplit(rabbitmq_url).path[1:]
    assert message.startswith(f"tideflow: RabbitMQ queue '{topology.SCHEDULER_EVENTS_QUEUE}'")
    assert "x-queue-type" in message
    assert "quorum" in message
    assert f"rabbitmqctl delete_queue -p {vhost} {topology.SCHEDULER_EVENTS_QUEUE}" in message
    assert "tideflow migrate" in message
    assert queue_types(rabbitmq_url)[topology.SCHEDULER_EVENTS_QUEUE] == "classic"

    # Doing what it says works.
    subprocess.run(
        ["rabbitmqctl", "delete_queue", "-p", vhost, topology.SCHEDULER_EVENTS_QUEUE],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert migrate(postgres_url, rabbitmq_url).returncode == 0
    assert queue_types(rabbitmq_url)[topology.SCHEDULER_EVENTS_QUEUE] == "quorum"
