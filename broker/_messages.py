"""What travels between the parts: events as JSON (any AMQP producer may publish them),
internal messages as msgpack."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any

import msgpack
from tideflow import errors
from tideflow._core import protocol

from . import _topology as topology
from ._base import Broker, Message

EVENT_CONTENT_TYPE = "application/json"
_MAC_BYTES = 32


class Seal:
    """Signs internal messages (jobs, outcomes) with `TIDEFLOW_SIGNING_KEY` (HMAC-SHA256), so a
    client of the broker without the key cannot make workers run jobs or schedulers apply
    outcomes. Without a key, messages go as they are."""

    def __init__(self, key: str | None) -> None:
        self._key = key.encode() if key else None

    def close(self, payload: bytes) -> bytes:
        if self._key is None:
            return payload
        return hmac.digest(self._key, payload, hashlib.sha256) + payload

    def open(self, body: bytes) -> bytes:
        """The payload of a sealed body. Raises `SignatureError` if the signature is wrong."""
        if self._key is None:
            return body
        mac, payload = body[:_MAC_BYTES], body[_MAC_BYTES:]
        if not hmac.compare_digest(mac, hmac.digest(self._key, payload, hashlib.sha256)):
            raise errors.SignatureError("internal message with a missing or wrong signature")
        return payload


_PLAIN = Seal(None)


@dataclasses.dataclass(frozen=True)
class JobMessage:
    """Tells a worker of the app that a step job is ready; the store holds the job itself."""

    job_id: str
    run_id: str
    function_id: str
    app_id: str

    def to_message(self, seal: Seal = _PLAIN) -> Message:
        body = seal.close(msgpack.packb(dataclasses.astuple(self)))
        return Message(
            topology.INTERNAL_EXCHANGE, topology.jobs_key(self.app_id), body, message_id=self.job_id
        )

    @classmethod
    def decode(cls, body: bytes, seal: Seal = _PLAIN) -> JobMessage:
        """Raises `ValueError` (what is wrong) or `SignatureError`."""
        return cls(*_strings(seal.open(body), 4))


@dataclasses.dataclass(frozen=True)
class OutcomeMessage:
    """Tells the scheduler that jobs' outcomes are written and wait to be applied: the jobs a
    worker ended together go in one message."""

    job_ids: tuple[str, ...]

    def to_message(self, seal: Seal = _PLAIN) -> Message:
        body = seal.close(msgpack.packb(list(self.job_ids)))
        return Message(
            topology.INTERNAL_EXCHANGE, topology.OUTCOMES_KEY, body, message_id=self.job_ids[0]
        )

    @classmethod
    def decode(cls, body: bytes, seal: Seal = _PLAIN) -> OutcomeMessage:
        """Raises `ValueError` (what is wrong) or `SignatureError`."""
        fields = _unpacked(seal.open(body))
        if not (isinstance(fields, list) and 0 < len(fields) <= _MAX_OUTCOMES):
            raise ValueError(f"expected an array of 1 to {_MAX_OUTCOMES} strings")
        return cls(tuple(_text(field) for field in fields))


def offload_message(job: protocol.OffloadJob, seal: Seal = _PLAIN) -> Message:
    """Hands an offloaded request to the offload loops of its app. Sealed like a job, since it
    may carry an API key."""
    body = seal.close(msgpack.packb(job.encode()))
    return Message(
        topology.INTERNAL_EXCHANGE,
        topology.offload_key(job.app_id),
        body,
        message_id=f"{job.run_id}:{job.step_hash}:{job.attempt}",
    )


def decode_offload(body: bytes, seal: Seal = _PLAIN) -> protocol.OffloadJob:
    """The job in an offload message. Raises `ValueError`, `TypeError` or `SignatureError`."""
    return protocol.OffloadJob.decode(msgpack.unpackb(seal.open(body)))


def offloaded_message(result: protocol.OffloadResult, seal: Seal = _PLAIN) -> Message:
    """Tells the scheduler what an offloaded request came to."""
    body = seal.close(msgpack.packb(result.encode()))
    return Message(topology.INTERNAL_EXCHANGE, topology.OFFLOADED_KEY, body)


def decode_offloaded(body: bytes, seal: Seal = _PLAIN) -> protocol.OffloadResult:
    """The result in an offloaded message. Raises `ValueError`, `TypeError` or
    `SignatureError`."""
    return protocol.OffloadResult.decode(msgpack.unpackb(seal.open(body)))


@dataclasses.dataclass(frozen=True)
class CancelNotice:
    """Tells the workers of an app that these runs were cancelled: a worker running one of them
    starts no further step. A lost notice costs little: the run's job is gone, so the worker's
    next write fails and it stops then."""

    app_id: str
    run_ids: tuple[str, ...]

    def to_message(self, seal: Seal = _PLAIN) -> Message:
        body = seal.close(msgpack.packb([self.app_id, list(self.run_ids)]))
        return Message(
            topology.BROADCAST_EXCHANGE,
            topology.cancel_key(self.app_id),
            body,
            mandatory=False,
        )

    @classmethod
    def decode(cls, body: bytes, seal: Seal = _PLAIN) -> CancelNotice:
        """Raises `ValueError` (what is wrong) or `SignatureError`."""
        payload = _unpacked(seal.open(body))
        if not (isinstance(payload, list) and len(payload) == 2):
            raise ValueError("expected [app_id, [run_id, ...]]")
        app_id, run_ids = payload
        if not isinstance(run_ids, list):
            raise ValueError("expected [app_id, [run_id, ...]]")
        return cls(_text(app_id), tuple(_text(run_id) for run_id in run_ids))


_MAX_ID_CHARS = 256


def _unpacked(payload: bytes) -> Any:
    try:
        return msgpack.unpackb(payload)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"not msgpack: {exc!r}") from None


_MAX_OUTCOMES = 1_000
"""The most jobs one outcome message names: a worker's batch is bounded by its concurrency."""


def _strings(payload: bytes, count: int) -> list[str]:
    """The `count` ids a message is made of: a msgpack array of non-empty strings."""
    fields = _unpacked(payload)
    if not (isinstance(fields, list) and len(fields) == count):
        raise ValueError(f"expected an array of {count} strings")
    return [_text(field) for field in fields]


def _text(value: Any) -> str:
    # Ids end in the store's text columns, which refuse NUL; none is long.
    if not (isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS and "\x00" not in value):
        raise ValueError(f"expected an id (a string of 1 to {_MAX_ID_CHARS} characters)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("expected an id (a string of valid UTF-8)") from None
    return value


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
