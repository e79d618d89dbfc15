"""Hostile AMQP input, generated (hypothesis): every body a producer may put on the events
exchange, and every body on the internal queues, is either a well-formed message or refused
with a reason (what the consumers dead-letter it with); nothing else escapes the decoders.

The same decoders run in the consumers (scheduler/_decoding.py, broker/_messages.py); the live
counterpart, through RabbitMQ and a running scheduler, is test_amqp_hostile.py (same folder).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import string
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tideflow import errors
from tideflow._event import MAX_EVENT_BYTES
from tideflow.broker import Delivery, JobMessage, OutcomeMessage, Seal
from tideflow.scheduler._decoding import MAX_BODY_BYTES, MAX_DEPTH, event_from_delivery

NOW = 1_750_000_000_000
KEY = "the-signing-key"
# Per run of the suite: >= 10,000 bodies in all, within about a minute on a shared CI machine.
# Each example is a handful of bodies: hypothesis' own cost per example is most of the time.
PER_EXAMPLE = 10
EVENT_CASES = 10_000
INTERNAL_CASES = 5_000
GOOD_CASES = 300


class Body(Delivery):
    def __init__(self, body: bytes, message_id: str | None = None) -> None:
        self.body = body
        self.routing_key = "hostile"
        self.message_id = message_id
        self.content_type = "application/json"
        self.redelivered = False

    async def ack(self) -> None:
        raise AssertionError("not settled here")

    async def requeue(self) -> None:
        raise AssertionError("not settled here")

    async def dead_letter(self, reason: str) -> None:
        raise AssertionError("not settled here")


# What a store keeps: strings without NUL (hypothesis makes no lone surrogates in text).
clean_text = functools.partial(st.text, st.characters(exclude_characters="\x00"))
json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    clean_text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(clean_text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
good_name = st.text(string.ascii_letters + "/._-", min_size=1, max_size=30).filter(
    lambda name: name.strip() != ""
)
good_event = st.fixed_dictionaries(
    {"name": good_name},
    optional={
        "data": st.dictionaries(clean_text(max_size=8), json_value, max_size=4),
        "id": st.text(string.ascii_letters + string.digits, min_size=1, max_size=20),
        "ts": st.integers(min_value=0, max_value=2**41),
        "v": st.text(string.digits + ".", max_size=5),
        "user": json_value,
    },
)
FIELDS = ["name", "data", "id", "ts", "v", "user", "internal_id", "target"]


def encoded(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


KINDS = [
    "not JSON",
    "not an object",
    "not an event",
    "wrongly typed",
    "unknown field",
    "oversized",
    "bad value",
]


@st.composite
def hostile_events(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    """Bodies that must be refused, each with its `kind` (what is wrong with it): one of each
    kind made from one well-formed event, then a few more of random kinds. Drawing the event is
    most of the cost of an example, so each example spends it on several bodies."""
    event = draw(good_event)
    kinds = KINDS + draw(st.lists(st.sampled_from(KINDS), min_size=3, max_size=3))
    return [draw(hostile_event(kind, dict(event))) for kind in kinds]


@st.composite
def hostile_event(draw: st.DrawFn, kind: str, event: dict[str, Any]) -> tuple[str, bytes]:
    if kind == "not JSON":
        raw = draw(st.binary(min_size=0, max_size=200))
        body = raw if not _is_json(raw) else b"{" + raw
        return kind, body
    if kind == "not an object":
        return kind, encoded(draw(st.lists(json_value, max_size=3) | json_leaf))
    if kind == "not an event":
        del event["name"]
        if draw(st.booleans()):
            event["name"] = draw(st.sampled_from(["", "   ", "\t"]))
        return kind, encoded(event)
    if kind == "wrongly typed":
        field = draw(st.sampled_from(["name", "data", "id", "ts", "v", "internal_id", "target"]))
        wrong = {
            "name": st.integers() | st.lists(st.integers(), max_size=2) | st.none(),
            "data": st.lists(json_value, max_size=3) | st.integers() | st.text(max_size=5),
            "id": st.integers() | st.lists(st.integers(), max_size=2) | st.booleans(),
            "ts": st.text(min_size=1, max_size=5)
            | st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
            | st.integers(max_value=-1)
            | st.integers(min_value=2**63),
            "v": st.integers() | st.lists(st.integers(), max_size=2),
            "internal_id": st.integers() | st.text(" ,;!\x01", min_size=1, max_size=3),
            "target": st.integers() | st.text(max_size=5) | st.just({"function_id": 7}),
        }[field]
        event[field] = draw(wrong)
        return kind, encoded(event)
    if kind == "unknown field":
        extra = draw(st.text(min_size=1, max_size=10).filter(lambda f: f not in FIELDS))
        event[extra] = draw(json_value)
        return kind, encoded(event)
    if kind == "oversized":
        size = draw(st.integers(min_value=MAX_EVENT_BYTES, max_value=MAX_BODY_BYTES * 2))
        event["data"] = {"blob": "x" * size}
        return kind, encoded(event)
    bad = draw(
        st.sampled_from(
            [
                b'"a\\u0000b"',
                b'"\\ud800"',
                b"NaN",
                b"-Infinity",
                b"1" * 5000,
                b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1),
                b"[" * 100_000,
            ]
        )
    )
    at = draw(st.sampled_from(["data", "name", "user", "key"]))
    prefix = encoded(event)[:-1]
    if at == "data":
        return kind, prefix + b',"data":{"k":' + bad + b"}}"
    if at == "user":
        return kind, prefix + b',"user":' + bad + b"}"
    if at == "key" and bad.startswith(b'"'):
        return kind, prefix + b',"data":{' + bad + b":1}}"
    return kind, b'{"name":' + bad + b"}"


def _is_json(raw: bytes) -> bool:
    try:
        json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return True


def storable(value: Any) -> None:
    """What a store must be able to keep: strict JSON, no NUL, no lone surrogate."""
    text = json.dumps(value, allow_nan=False)
    assert "\\u0000" not in text
    text.encode("utf-8")


def report(figures: list[str], where: str, counts: collections.Counter[str]) -> None:
    kinds = ", ".join(f"{k[:-1]} {v}" for k, v in sorted(counts.items()) if k.endswith(":"))
    figures.append(
        f"hostile input, {where}: {counts['cases']} cases, {counts['dead']} dead letters, "
        f"{counts['accepted']} accepted" + (f" ({kinds})" if kinds else "")
    )


@pytest.mark.timeout(150)
def test_each_hostile_event_body_is_refused_with_a_reason(figures: list[str]) -> None:
    counts: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=EVENT_CASES // PER_EXAMPLE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(cases=hostile_events())
    def check(cases: list[tuple[str, bytes]]) -> None:
        for kind, body in cases:
            counts["cases"] += 1
            with pytest.raises(errors.EventError) as refused:
                event_from_delivery(Body(body), NOW)
            assert str(refused.value), body
            counts["dead"] += 1
            counts[f"{kind}:"] += 1

    check()
    report(figures, "events exchange", counts)
    assert counts["dead"] == counts["cases"] >= EVENT_CASES


def test_a_well_formed_event_is_one_the_store_can_keep(figures: list[str]) -> None:
    counts: collections.Counter[str] = collections.Counter()

    @settings(max_examples=GOOD_CASES, deadline=None, database=None)
    @given(event=good_event, message_id=st.none() | st.text(max_size=10))
    def check(event: dict[str, Any], message_id: str | None) -> None:
        counts["cases"] += 1
        try:
            record = event_from_delivery(Body(encoded(event), message_id), NOW)
        except errors.EventError:
            # Only for what a store could not keep, which the message id may carry.
            assert message_id is not None
            assert not storable_text(message_id)
            counts["dead"] += 1
            return
        counts["accepted"] += 1
        assert (record.name, record.data) == (event["name"], event.get("data", {}))
        storable([record.internal_id, record.id, record.name, record.data, record.user])
        assert 0 <= record.ts < 2**63

    check()
    report(figures, "events exchange, well-formed", counts)
    assert counts["cases"] >= GOOD_CASES


def storable_text(text: str) -> bool:
    try:
        storable(text)
    except (AssertionError, UnicodeEncodeError):
        return False
    return True


msgpack_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.floats(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@st.composite
def hostile_internal(draw: st.DrawFn) -> tuple[str, bool, bytes]:
    """(kind, signed, body) of a job or outcome message that must be refused."""
    signed = draw(st.booleans())
    seal = Seal(KEY if signed else None)
    kind = draw(st.sampled_from(["garbage", "wrong shape", "truncated", "forged"]))
    good = JobMessage(*draw(st.lists(st.text(min_size=1, max_size=10), min_size=4, max_size=4)))
    sealed = good.to_message(seal).body
    if kind == "garbage":
        body = draw(st.binary(max_size=100))
        return kind, signed, seal.close(body) if signed and draw(st.booleans()) else body
    if kind == "wrong shape":
        payload = draw(msgpack_value.filter(lambda v: not _is_id_list(v)))
        return kind, signed, seal.close(msgpack.packb(payload))
    if kind == "truncated":
        cut = draw(st.integers(min_value=0, max_value=len(sealed) - 1))
        return kind, signed, sealed[:cut]
    # Forged: well-formed, but signed with another key or not at all.
    other = Seal(draw(st.sampled_from(["another-key", "", KEY + "x"])) or None)
    if not signed:
        return "wrong shape", signed, seal.close(msgpack.packb([1, 2, 3, 4]))
    return kind, signed, good.to_message(other).body


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


@pytest.mark.timeout(150)
def test_each_hostile_internal_message_is_refused_with_a_reason(figures: list[str]) -> None:
    counts: collections.Counter[str] = collections.Counter()

    @settings(
        max_examples=INTERNAL_CASES // PER_EXAMPLE,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(cases=st.lists(hostile_internal(), min_size=PER_EXAMPLE, max_size=PER_EXAMPLE))
    def check(cases: list[tuple[str, bool, bytes]]) -> None:
        for case in cases:
            check_internal(case, counts)

    check()
    report(figures, "internal queues (jobs, outcomes)", counts)
    assert counts["cases"] >= 2 * INTERNAL_CASES
    assert counts["dead"] >= counts["cases"] * 0.9


def check_internal(case: tuple[str, bool, bytes], counts: collections.Counter[str]) -> None:
    kind, signed, body = case
    seal = Seal(KEY if signed else None)
    for decode, fields in ((JobMessage.decode, 4), (OutcomeMessage.decode, None)):
        counts["cases"] += 1
        try:
            message = decode(body, seal)
        except (ValueError, errors.SignatureError) as exc:
            reason = str(exc)
            assert reason, "a dead letter needs a reason"
            counts["dead"] += 1
            counts[f"{kind}:"] += 1
            continue
        # Random bytes may happen to be a well-formed message (with a valid signature, when
        # the generator signed them): then it must be exactly that.
        assert kind == "garbage", message
        # An outcome message names any number of jobs; a job message is four ids.
        ids = list(
            message.job_ids if isinstance(message, OutcomeMessage) else dataclasses.astuple(message)
        )
        assert ids_in(seal.open(body)) == ids
        assert fields is None or len(ids) == fields
        counts["accepted"] += 1


def ids_in(payload: bytes) -> list[str] | None:
    try:
        value = msgpack.unpackb(payload)
    except (ValueError, msgpack.UnpackException):
        return None
    return value if _is_id_list(value) else None
