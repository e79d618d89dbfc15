from __future__ import annotations

import abc
import dataclasses
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

from tideflow._settings import Settings


@dataclasses.dataclass(frozen=True)
class Message:
    """An outgoing message: where it goes and what it carries."""

    exchange: str
    routing_key: str
    body: bytes
    content_type: str = "application/msgpack"
    message_id: str | None = None
    mandatory: bool = True
    """Refused (`publish` raises) when no queue takes it; False for broadcast notices."""


DEFAULT_DELIVERY_LIMIT = Settings.delivery_limit
"""How many times a message may be delivered (`TIDEFLOW_DELIVERY_LIMIT`): one that came back
unsettled that often (its consumer died or gave it back each time) is dead-lettered."""


def delivery_limit_reason(deliveries: int, limit: int) -> str:
    """The dead letter's reason for a message over the delivery limit."""
    return (
        f"delivery limit: delivered {deliveries} times without being settled "
        f"(TIDEFLOW_DELIVERY_LIMIT={limit})"
    )


class Delivery(abc.ABC):
    """A received message, owned by its consumer until acked, requeued or dead-lettered."""

    body: bytes
    routing_key: str
    message_id: str | None
    content_type: str | None
    redelivered: bool
    delivery_count: int = 0
    """How many times it was delivered before and came back unsettled (requeued, or its
    consumer went away): RabbitMQ's `x-delivery-count`."""

    @abc.abstractmethod
    async def ack(self) -> None:
        """Removes the message for good. Call after its effects are committed."""

    @abc.abstractmethod
    async def requeue(self) -> None:
        """Gives the message back to the queue to be delivered again."""

    @abc.abstractmethod
    async def dead_letter(self, reason: str) -> None:
        """Removes the message from its queue and keeps it, with `reason`, in the dead letters."""


class Notice(Delivery):
    """A broadcast message (`Broker.subscribe`): consumed without acknowledgement, so settling
    it does nothing."""

    def __init__(
        self, body: bytes, routing_key: str, message_id: str | None, content_type: str | None
    ) -> None:
        self.body = body
        self.routing_key = routing_key
        self.message_id = message_id
        self.content_type = content_type
        self.redelivered = False

    async def ack(self) -> None:
        return None

    async def requeue(self) -> None:
        return None

    async def dead_letter(self, reason: str) -> None:
        return None


class Broker(abc.ABC):
    """Moves messages between the parts of tideflow. Delivery is at-least-once."""

    @property
    @abc.abstractmethod
    def is_durable(self) -> bool:
        """Whether a published message survives this process dying."""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Opens connections and declares the fixed topology. Idempotent."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stops consumers and closes connections. Unacked deliveries return to their queues."""

    @abc.abstractmethod
    async def declare_queue(
        self, queue: str, *, exchange: str, routing_keys: Sequence[str]
    ) -> None:
        """Declares a durable queue bound to `exchange` by each key. Idempotent.

        Over AMQP it is a quorum queue (replicated with Raft on a cluster).

        Raises:
            ConfigError: a queue of that name exists with another type (a classic queue made
                by an older tideflow): the message says how to replace it.
        """

    @abc.abstractmethod
    async def publish(self, messages: Sequence[Message]) -> None:
        """Publishes persistent messages; returns once the broker has taken them all.

        Every message must reach at least one queue (a queue bound to its exchange by a key
        matching its routing key), as AMQP's mandatory flag asks.

        Raises:
            UnroutableError: a message reached no queue (its `exchange` and `routing_key` say
                which). The memory broker checks the whole batch before delivering anything,
                so then none of it was delivered; RabbitMQ may have delivered the others.
            BrokerError: a message was not confirmed; then any of them may have been delivered.
        """

    @abc.abstractmethod
    def consume(self, queue: str, *, prefetch: int) -> AsyncIterator[Delivery]:
        """Yields deliveries from `queue`, at most `prefetch` unacked at once, until closed.

        A message that was delivered `delivery_limit` times already and came back unsettled
        each time is not yielded: it goes to the dead letters with reason "delivery limit".

        Survives reconnections: after a broker restart, consumption resumes by itself, and the
        deliveries unacked at the time come again (with `redelivered` set).
        """

    @abc.abstractmethod
    def subscribe(self, exchange: str, routing_keys: Sequence[str]) -> AsyncIterator[Delivery]:
        """Yields the messages published to `exchange` under a matching key from now on, through
        a queue of this subscriber's own that goes away with it. At most once: nothing is kept
        for a subscriber that is not listening (messages published while its connection is
        being restored are lost). Settling a delivery is a no-op.
        """

    @abc.abstractmethod
    async def ping(self) -> bool:
        """Whether the broker is reachable now."""

    async def __aenter__(self) -> Broker:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def declare_fixed_topology(broker: Broker) -> None:
    """The queues every deployment has: the scheduler's inputs and the dead letters."""
    from . import _topology as topology

    await broker.declare_queue(
        topology.SCHEDULER_EVENTS_QUEUE, exchange=topology.EVENTS_EXCHANGE, routing_keys=["#"]
    )
    await broker.declare_queue(
        topology.SCHEDULER_OUTCOMES_QUEUE,
        exchange=topology.INTERNAL_EXCHANGE,
        routing_keys=[topology.OUTCOMES_KEY],
    )
    await broker.declare_queue(
        topology.SCHEDULER_OFFLOADED_QUEUE,
        exchange=topology.INTERNAL_EXCHANGE,
        routing_keys=[topology.OFFLOADED_KEY],
    )
    await broker.declare_queue(
        topology.DEAD_LETTER_QUEUE, exchange=topology.INTERNAL_EXCHANGE, routing_keys=["dead"]
    )
