"""What travels between the parts: events as JSON (any AMQP producer may publish them),
internal messages as msgpack."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import msgpack

from . import _topology as topology
from ._base import Broker, Message

EVENT_CONTENT_TYPE = "application/json"


@dataclasses.dataclass(frozen=True)
class JobMessage:
    """Tells a worker of the app that a step job is ready; the store holds the job itself."""

    job_id: str
    run_id: str
    function_id: str
    app_id: str

    def to_message(self) -> Message:
        body = msgpack.packb(dataclasses.astuple(self))
        return Message(
            topology.INTERNAL_EXCHANGE, topology.jobs_key(self.app_id), body, message_id=self.job_id
        )

    @classmethod
    def decode(cls, body: bytes) -> JobMessage:
        return cls(*msgpack.unpackb(body))


@dataclasses.dataclass(frozen=True)
class OutcomeMessage:
    """Tells the scheduler that a job's outcome is written and waits to be applied."""

    job_id: str

    def to_message(self) -> Message:
        body = msgpack.packb([self.job_id])
        return Message(
            topology.INTERNAL_EXCHANGE, topology.OUTCOMES_KEY, body, message_id=self.job_id
        )

    @classmethod
    def decode(cls, body: bytes) -> OutcomeMessage:
        return cls(*msgpack.unpackb(body))


def event_message(record: dict[str, Any]) -> Message:
    body = json.dumps(record, separators=(",", ":")).encode()
    return Message(
        topology.EVENTS_EXCHANGE,
        record["name"],
        body,
        content_type=EVENT_CONTENT_TYPE,
        message_id=record.get("internal_id"),
    )


async def publish_events(broker: Broker, records: list[dict[str, Any]]) -> None:
    """Publishes event records (each with its `internal_id`) to the events exchange."""
    await broker.publish([event_message(record) for record in records])
