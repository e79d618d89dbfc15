"""Realtime: typed channels and topics that functions publish to (`ctx.publish`) and subscribers
follow with a signed token (`client.realtime_token`, `client.subscribe`, or the API's SSE and
WebSocket routes)."""

from __future__ import annotations

from ._realtime import Channel, Subscription, Topic, channel, topic

__all__ = ["Channel", "Subscription", "Topic", "channel", "topic"]
