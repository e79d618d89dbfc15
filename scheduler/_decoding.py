"""Events as they arrive on the events exchange, from any AMQP producer: checked whole before
anything is stored, so that a hostile body is dead-lettered with its reason and never reaches
the store (where it could fail each time, and hold up the messages behind it)."""

from __future__ import annotations

import json
import re
from typing import Any

from tideflow import _event as ev
from tideflow import errors
from tideflow._core.ids import derived_id, new_id
from tideflow.broker import Delivery
from tideflow.store import models as m

MAX_BODY_BYTES = 2 * ev.MAX_EVENT_BYTES
"""Bodies over this are refused unread; the event itself is held to `MAX_EVENT_BYTES`."""
MAX_DEPTH = 64
"""How deeply arrays and objects may nest in an event."""
MAX_TS = 253_402_300_799_999
"""The last millisecond of the year 9999: a larger `ts` would overflow the store's integers."""
_INTERNAL_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_TARGET_KEYS = frozenset({"function_id", "parent", "rerun_of"})
_PARENT_KEYS = frozenset({"run_id", "step_hash"})
# JSON types, strictly: the API's lax coercions ("5" for 5) are not for a wire format.
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "name": ((str,), "a string"),
    "id": ((str, type(None)), "a string"),
    "ts": ((int, type(None)), "an integer"),
    "v": ((str, type(None)), "a string"),
    "data": ((dict, type(None)), "an object"),
}


def event_from_delivery(delivery: Delivery, now: int) -> m.EventRecord:
    """An event as published to the events exchange: a JSON object with at least a name.

    Raises:
        EventError: what is wrong with it.
    """
    raw = _json_object(delivery.body)
    internal_id = raw.pop("internal_id", None)
    if internal_id is not None and not (
        isinstance(internal_id, str) and _INTERNAL_ID.fullmatch(internal_id)
    ):
        raise errors.EventError("internal_id must be an id: up to 64 letters, digits, - or _")
    if delivery.message_id:
        _check_text(delivery.message_id)
    if internal_id is None and delivery.message_id:
        # An outside producer's message id: its redelivery is the same event, and its dedup key.
        internal_id = derived_id("amqp", delivery.message_id)
        raw.setdefault("id", delivery.message_id)
    target = _target(raw.pop("target", None))
    for field, (types, what) in _FIELD_TYPES.items():
        value = raw.get(field)
        wrong = not isinstance(value, types) or isinstance(value, bool)
        if wrong and field in raw:
            raise errors.EventError(f"event {field} must be {what}, not {_kind(value)}")
    event = ev.parse_events(raw, allow_system=True)[0]
    if event.ts is not None and not 0 <= event.ts <= MAX_TS:
        raise errors.EventError(f"event ts must be milliseconds from 0 to {MAX_TS}")
    return m.EventRecord(
        internal_id=str(internal_id or new_id(now)),
        id=event.id,
        name=event.name,
        data=event.data,
        ts=event.ts if event.ts is not None else now,
        user=event.user,
        v=event.v,
        target=target,
        received_at=now,
    )


def _json_object(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise errors.EventError(
            f"body is {len(body)} bytes; an event is at most {ev.MAX_EVENT_BYTES} (512 KiB)"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise errors.EventError(f"body is not UTF-8: {exc}") from None
    try:
        raw = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise errors.EventError(f"body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, and integers of over 4,300 digits
        raise errors.EventError(f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise errors.EventError("body must be one JSON object")
    _check_values(raw, depth=0)
    return raw


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_values(value: Any, *, depth: int) -> None:
    """Refuses what JSON parsers accept but stores do not: NUL characters and unpaired
    surrogates in strings (PostgreSQL's jsonb and text refuse both), and deep nesting."""
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, (dict, list)):
        if depth >= MAX_DEPTH:
            raise errors.EventError(f"body nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key)
                _check_values(item, depth=depth + 1)
        else:
            for item in value:
                _check_values(item, depth=depth + 1)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise errors.EventError("a string holds a NUL character (\\u0000)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise errors.EventError("a string holds an unpaired surrogate (\\ud800-\\udfff)") from None


def _target(target: Any) -> dict[str, Any] | None:
    """The function an engine-made event asks to run (an invocation, a rerun), checked."""
    if target is None:
        return None
    problem = "target must be an object with a function_id"
    if not (isinstance(target, dict) and isinstance(target.get("function_id"), str)):
        raise errors.EventError(problem)
    if not set(target) <= _TARGET_KEYS:
        raise errors.EventError(f"target has unknown fields: {sorted(set(target) - _TARGET_KEYS)}")
    parent = target.get("parent")
    if parent is not None and not (
        isinstance(parent, dict)
        and set(parent) == _PARENT_KEYS
        and all(isinstance(parent[key], str) for key in _PARENT_KEYS)
    ):
        raise errors.EventError("target.parent must be an object with run_id and step_hash")
    if not isinstance(target.get("rerun_of", ""), str):
        raise errors.EventError("target.rerun_of must be a run id")
    return target
