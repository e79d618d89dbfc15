from __future__ import annotations

import asyncio
import collections
import dataclasses
from collections.abc import AsyncIterator, Sequence

from tideflow import errors

from . import _metrics
from . import _topology as topology
from ._base import (
    DEFAULT_DELIVERY_LIMIT,
    Broker,
    Delivery,
    Message,
    Notice,
    declare_fixed_topology,
    delivery_limit_reason,
)


@dataclasses.dataclass
class DeadLetter:
    queue: str
    message: Message
    reason: str


class _Queue:
    """Messages ready for delivery and a count of those in hand. Every change is synchronous,
    so a publish cannot be cut in half by a cancellation; waiting consumers are woken by
    swapping in a fresh event."""

    def __init__(self, name: str) -> None:
        self.name = name
        # Each message with the times it came back unsettled (RabbitMQ's x-delivery-count).
        self.ready: collections.deque[tuple[Message, int]] = collections.deque()
        self.unacked = 0
        self.changed = asyncio.Event()

    def put(self, message: Message, *, returned: int = 0, front: bool = False) -> None:
        if front:
            self.ready.appendleft((message, returned))
        else:
            self.ready.append((message, returned))
        self.wake()

    def settle(self) -> None:
        self.unacked -= 1
        self.wake()

    def wake(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()


class _MemoryDelivery(Delivery):
    def __init__(
        self, broker: MemoryBroker, queue: _Queue, message: Message, returned: int
    ) -> None:
        self._broker = broker
        self._queue = queue
        self._message = message
        self._settled = False
        self.body = message.body
        self.routing_key = message.routing_key
        self.message_id = message.message_id
        self.content_type = message.content_type
        self.redelivered = returned > 0
        self.delivery_count = returned

    def _settle(self) -> bool:
        if self._settled:
            return False
        self._settled = True
        self._queue.settle()
        return True

    async def ack(self) -> None:
        self._settle()

    async def requeue(self) -> None:
        if self._settle():
            self._queue.put(self._message, returned=self.delivery_count + 1, front=True)

    async def dead_letter(self, reason: str) -> None:
        if self._settle():
            self._broker.dead_letters.append(DeadLetter(self._queue.name, self._message, reason))


class MemoryBroker(Broker):
    """An in-process broker for `tideflow dev` and tests: topic and direct routing, prefetch,
    requeue, and a list of dead letters. Nothing survives the process."""

    def __init__(self, *, delivery_limit: int = DEFAULT_DELIVERY_LIMIT) -> None:
        self._delivery_limit = delivery_limit
        self._bindings: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
        self._queues: dict[str, _Queue] = {}
        self._subscribers: dict[str, list[tuple[Sequence[str], asyncio.Queue[Message]]]] = (
            collections.defaultdict(list)
        )
        self._closed = asyncio.Event()
        self._open = False
        self.dead_letters: list[DeadLetter] = []

    @property
    def is_durable(self) -> bool:
        return False

    async def connect(self) -> None:
        self._open = True
        self._closed.clear()
        await declare_fixed_topology(self)

    async def close(self) -> None:
        self._open = False
        self._closed.set()
        for queue in self._queues.values():
            queue.wake()

    async def ping(self) -> bool:
        return self._open

    async def declare_queue(
        self, queue: str, *, exchange: str, routing_keys: Sequence[str]
    ) -> None:
        self._queues.setdefault(queue, _Queue(queue))
        for key in routing_keys:
            if (key, queue) not in self._bindings[exchange]:
                self._bindings[exchange].append((key, queue))

    async def publish(self, messages: Sequence[Message]) -> None:
        """Routes every message first and delivers only if each reaches a queue: an
        unroutable mandatory message fails the whole batch with `UnroutableError`, delivering
        none. Subscribers (`subscribe`) get what matches them, mandatory or not."""
        if not self._open:
            raise errors.BrokerConnectionError("the memory broker is closed")
        routes = [(message, self._route(message)) for message in messages]
        for message, queues in routes:
            if not queues and message.mandatory:
                raise errors.UnroutableError(message.exchange, message.routing_key)
        # No await from here on: the batch is delivered whole, even if the caller is cancelled.
        for message, queues in routes:
            _metrics.PUBLISHED.labels("memory", message.exchange).inc()
            for queue in queues:
                queue.put(message)
            for inbox in self._subscribers_of(message):
                inbox.put_nowait(message)

    def _route(self, message: Message) -> list[_Queue]:
        # As in AMQP, a queue that several of its bindings match gets the message once.
        names = {
            queue: None
            for pattern, queue in self._bindings.get(message.exchange, ())
            if topology.topic_matches(pattern, message.routing_key)
        }
        return [self._queues[name] for name in names]

    def _subscribers_of(self, message: Message) -> list[asyncio.Queue[Message]]:
        return [
            inbox
            for patterns, inbox in self._subscribers.get(message.exchange, ())
            if any(topology.topic_matches(p, message.routing_key) for p in patterns)
        ]

    def _is_open(self) -> bool:
        return self._open

    async def consume(self, queue: str, *, prefetch: int) -> AsyncIterator[Delivery]:
        source = self._queues.setdefault(queue, _Queue(queue))
        while self._is_open():
            if not (source.ready and source.unacked < prefetch):
                await source.changed.wait()
                continue
            message, returned = source.ready.popleft()
            source.unacked += 1
            _metrics.CONSUMED.labels("memory", queue).inc()
            delivery = _MemoryDelivery(self, source, message, returned)
            if returned >= self._delivery_limit:
                await delivery.dead_letter(delivery_limit_reason(returned, self._delivery_limit))
                continue
            yield delivery

    async def subscribe(
        self, exchange: str, routing_keys: Sequence[str]
    ) -> AsyncIterator[Delivery]:
        inbox: asyncio.Queue[Message] = asyncio.Queue()
        entry = (tuple(routing_keys), inbox)
        self._subscribers[exchange].append(entry)
        try:
            while self._is_open():
                closed = asyncio.ensure_future(self._closed.wait())
                received = asyncio.ensure_future(inbox.get())
                try:
                    await asyncio.wait({closed, received}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    closed.cancel()
                    if not received.done():
                        received.cancel()
                if not received.done() or received.cancelled():
                    return
                message = received.result()
                yield Notice(
                    message.body, message.routing_key, message.message_id, message.content_type
                )
        finally:
            self._subscribers[exchange].remove(entry)

    def depth(self, queue: str) -> int:
        """Messages waiting in `queue` (tests and metrics)."""
        source = self._queues.get(queue)
        return 0 if source is None else len(source.ready)
