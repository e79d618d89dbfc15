"""`TIDEFLOW_BROKER_URL` listing several nodes: the first that answers is used."""

from __future__ import annotations

import socket

import pytest
from tideflow import errors
from tideflow.broker import Message, create_broker, topology

pytestmark = [pytest.mark.rabbitmq]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_a_node_that_does_not_answer_is_passed_over_for_the_next(rabbitmq_url: str) -> None:
    down = f"amqp://guest:secret-1@127.0.0.1:{closed_port()}/"
    broker = create_broker(f"{down},{rabbitmq_url}")
    await broker.connect()
    try:
        await broker.declare_queue(
            "test.nodes", exchange=topology.INTERNAL_EXCHANGE, routing_keys=["n"]
        )
        await broker.publish([Message(topology.INTERNAL_EXCHANGE, "n", b"through the second")])
        async for delivery in broker.consume("test.nodes", prefetch=1):
            assert delivery.body == b"through the second"
            await delivery.ack()
            break
    finally:
        await broker.close()


async def test_when_no_node_answers_the_error_names_each_and_no_password() -> None:
    ports = [closed_port(), closed_port()]
    url = ",".join(f"amqp://guest:secret-{port}@127.0.0.1:{port}/" for port in ports)

    with pytest.raises(errors.BrokerConnectionError) as failed:
        await create_broker(url).connect()

    message = str(failed.value)
    assert all(f"127.0.0.1:{port}" in message for port in ports), message
    assert "secret" not in message
