from __future__ import annotations

import json

from tideflow import _event as ev
from tideflow import errors
from tideflow._core.ids import derived_id, new_id
from tideflow.broker import Delivery
from tideflow.store import models as m


def event_from_delivery(delivery: Delivery, now: int) -> m.EventRecord:
    """An event as published to the events exchange: a JSON object with at least a name.

    Raises:
        EventError: what is wrong with it.
    """
    try:
        raw = json.loads(delivery.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.EventError(f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise errors.EventError("body must be one JSON object")
    internal_id = raw.pop("internal_id", None)
    if internal_id is None and delivery.message_id:
        # An outside producer's message id: its redelivery is the same event, and its dedup key.
        internal_id = derived_id("amqp", delivery.message_id)
        raw.setdefault("id", delivery.message_id)
    target = raw.pop("target", None)
    event = ev.parse_events(raw, allow_system=True)[0]
    return m.EventRecord(
        internal_id=str(internal_id or new_id(now)),
        id=event.id,
        name=event.name,
        data=event.data,
        ts=event.ts if event.ts is not None else now,
        user=event.user,
        v=event.v,
        target=target if isinstance(target, dict) else None,
        received_at=now,
    )
