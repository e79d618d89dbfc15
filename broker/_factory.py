from __future__ import annotations

from tideflow import errors
from tideflow._core.extras import missing_cluster_extra
from tideflow._core.urls import mask_url

from ._base import DEFAULT_DELIVERY_LIMIT, Broker


def create_broker(
    url: str, *, publish_only: bool = False, delivery_limit: int = DEFAULT_DELIVERY_LIMIT
) -> Broker:
    """The broker for a URL: `memory://` or `amqp://user:pass@host:port/vhost` (or several
    AMQP URLs separated by commas: the nodes of one RabbitMQ cluster).

    `delivery_limit`: how many times a message may be delivered (`Broker.consume`).

    `publish_only`: a producer's broker (a `Client`), which never consumes: over AMQP it holds
    one connection instead of two.

    Raises:
        ConfigError: the URL names no known broker, or AMQP without the `cluster` extra.
    """
    if url.startswith("memory://"):
        from ._memory import MemoryBroker

        return MemoryBroker(delivery_limit=delivery_limit)
    if url.startswith(("amqp://", "amqps://")):
        try:
            from ._amqp import AmqpBroker
        except ImportError as exc:
            raise missing_cluster_extra(
                exc, variable="TIDEFLOW_BROKER_URL", what="RabbitMQ"
            ) from exc
        return AmqpBroker(url, publish_only=publish_only, delivery_limit=delivery_limit)
    raise errors.ConfigError(
        f"TIDEFLOW_BROKER_URL: {mask_url(url)!r} is neither memory:// nor amqp://"
    )
