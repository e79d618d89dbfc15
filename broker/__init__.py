"""The broker: the one place that knows how messages move (AMQP or in-process)."""

from __future__ import annotations

from . import _topology as topology
from ._base import DEFAULT_DELIVERY_LIMIT, Broker, Delivery, Message
from ._dispatcher import Dispatcher
from ._factory import create_broker
from ._memory import DeadLetter, MemoryBroker
from ._messages import (
    EVENT_CONTENT_TYPE,
    CancelNotice,
    JobMessage,
    OutcomeMessage,
    Seal,
    decode_offload,
    decode_offloaded,
    event_message,
    offload_message,
    offloaded_message,
    publish_events,
)

__all__ = [
    "DEFAULT_DELIVERY_LIMIT",
    "EVENT_CONTENT_TYPE",
    "Broker",
    "CancelNotice",
    "DeadLetter",
    "Delivery",
    "Dispatcher",
    "JobMessage",
    "MemoryBroker",
    "Message",
    "OutcomeMessage",
    "Seal",
    "create_broker",
    "decode_offload",
    "decode_offloaded",
    "event_message",
    "offload_message",
    "offloaded_message",
    "publish_events",
    "topology",
]
