from __future__ import annotations

from tideflow import errors

from ._base import Broker


def create_broker(url: str) -> Broker:
    """The broker for a URL: `memory://` or `amqp://user:pass@host:port/vhost`."""
    if url.startswith("memory://"):
        from ._memory import MemoryBroker

        return MemoryBroker()
    if url.startswith(("amqp://", "amqps://")):
        from ._amqp import AmqpBroker

        return AmqpBroker(url)
    raise errors.ConfigError(f"TIDEFLOW_BROKER_URL: {url!r} is neither memory:// nor amqp://")
