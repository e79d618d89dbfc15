"""RabbitMQ through aio-pika: topic exchanges, durable queues, confirmed persistent publishes,
consumers with manual ack and prefetch, and reconnection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueueIterator,
    AbstractRobustConnection,
    HeadersType,
)
from aio_pika.exceptions import (
    AMQPError,
    ChannelInvalidStateError,
    ChannelPreconditionFailed,
    DeliveryError,
    PublishError,
)
from aio_pika.queue import QueueIterator
from pamqp.commands import Basic
from pamqp.common import FieldTable
from tideflow import errors
from tideflow._core.backoff import Backoff, pause
from tideflow._core.urls import mask_url, redact

from . import _metrics
from . import _reconnection as reconnection
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

logger = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 5.0
_OPERATION_TIMEOUT_S = 10.0
_PUBLISH_PATIENCE_S = 12.0
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 2.0
# A lost connection surfaces as an OSError (AMQPConnectionError, TimeoutError) or a
# RuntimeError (ChannelInvalidStateError, "connection closed"); both pass once it is back.
_TRANSIENT = (OSError, RuntimeError)

# exchange, routing key, message, mandatory
_Outgoing = tuple[str, str, aio_pika.Message, bool]
# Every durable queue is a quorum queue: replicated with Raft over a cluster's nodes, so losing
# one node loses no message (classic mirroring is gone from RabbitMQ 4). The delivery limit is
# the engine's own (see `consume`), not `x-delivery-limit`: a queue's arguments cannot change
# once declared, and a limit set there would drop the reason on the way to the dead letters.
QUEUE_ARGUMENTS: FieldTable = {"x-queue-type": "quorum"}
_DELIVERY_COUNT = "x-delivery-count"


class AmqpBroker(Broker):
    """A broker on RabbitMQ: what it has confirmed survives any tideflow process dying.

    Publishing and consuming use separate robust connections, as RabbitMQ advises: when it
    blocks publishers (a memory or disk alarm), consumers can still ack and drain their
    queues. aio-pika re-opens a lost connection, with backoff; consumers then resume by
    themselves, and the deliveries that were in hand come again.

    Args:
        url: `amqp://user:password@host:port/vhost`, or several such URLs separated by commas:
            the nodes of one RabbitMQ cluster, tried in turn when connecting and reconnecting.
        delivery_limit: how many times a message may be delivered; see `Broker.consume`.
    """

    def __init__(
        self,
        url: str,
        *,
        publish_only: bool = False,
        delivery_limit: int = DEFAULT_DELIVERY_LIMIT,
    ) -> None:
        self._urls = [part.strip() for part in url.split(",") if part.strip()]
        self._where = ",".join(mask_url(part) for part in self._urls) or mask_url(url)
        if not self._urls:
            raise errors.ConfigError(f"invalid AMQP URL {self._where!r}: no URL")
        for part in self._urls:
            try:
                urllib.parse.urlsplit(part).port  # noqa: B018 (a typo is refused, not retried)
            except ValueError as exc:
                raise errors.ConfigError(
                    f"invalid AMQP URL {mask_url(part)}: {redact(str(exc), part)}"
                ) from exc
        reconnection.quiet_driver_logs()
        self._url = url
        self._delivery_limit = delivery_limit
        self._publisher: AbstractRobustConnection | None = None
        self._consumer: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._closing = asyncio.Event()
        self._publish_only = publish_only

    @property
    def is_durable(self) -> bool:
        return True

    async def connect(self) -> None:
        if self._channel is not None:
            return
        self._closing.clear()
        try:
            self._publisher = await self._open_connection()
            _metrics.count_reconnects(self._publisher, "publisher")
            if not self._publish_only:
                self._consumer = await self._open_connection()
                _metrics.count_reconnects(self._consumer, "consumer")
            async with asyncio.timeout(_OPERATION_TIMEOUT_S):
                channel = await self._publisher.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                for name in (
                    topology.EVENTS_EXCHANGE,
                    topology.INTERNAL_EXCHANGE,
                    topology.BROADCAST_EXCHANGE,
                    topology.REALTIME_EXCHANGE,
                ):
                    self._exchanges[name] = await channel.declare_exchange(
                        name, aio_pika.ExchangeType.TOPIC, durable=True
                    )
            self._channel = channel
        except (*_TRANSIENT, AMQPError) as exc:
            await self.close()
            where = ", ".join(
                f"{parts.hostname}:{parts.port or 5672}"
                for parts in map(urllib.parse.urlsplit, self._urls)
            )
            reason = repr(exc)
            for part in self._urls:
                reason = redact(reason, part)
            raise errors.BrokerConnectionError(
                f"cannot connect to RabbitMQ at {where}: {reason}"
            ) from exc
        await declare_fixed_topology(self)

    async def _open_connection(self) -> AbstractRobustConnection:
        # aio-pika's reconnect interval is one fixed number: `Reconnection` turns it into a
        # backoff (see there); our own loops (publish retries, consumers restarting) back off
        # with `Backoff` too. With several URLs, the first that answers; `Reconnection` moves
        # a lost connection on to the next.
        failure: BaseException | None = None
        for url in self._urls:
            try:
                connection = await aio_pika.connect_robust(
                    url, timeout=_CONNECT_TIMEOUT_S, reconnect_interval=reconnection.FIRST_S
                )
            except (*_TRANSIENT, AMQPError) as exc:
                failure = exc
                continue
            reconnection.Reconnection(
                self._where, is_closing=self._closing.is_set, urls=self._urls
            ).attach(connection)
            return connection
        assert failure is not None
        raise failure

    async def close(self) -> None:
        self._closing.set()
        connections = [c for c in (self._consumer, self._publisher) if c is not None]
        self._publisher = self._consumer = self._channel = None
        self._exchanges.clear()
        for connection in connections:
            try:
                async with asyncio.timeout(_OPERATION_TIMEOUT_S):
                    await connection.close()
            except (*_TRANSIENT, AMQPError) as exc:
                logger.debug("closing a RabbitMQ connection: %r", exc)

    async def ping(self) -> bool:
        connections = (
            (self._publisher,) if self._publish_only else (self._publisher, self._consumer)
        )
        return all(c is not None and c.connected.is_set() for c in connections)

    def _require_consuming(self) -> None:
        if self._publish_only:
            raise errors.LifecycleError("this AMQP broker was made to publish only")

    def _require_channel(self) -> AbstractChannel:
        if self._channel is None:
            raise errors.BrokerConnectionError("the AMQP broker is not connected")
        return self._channel

    async def declare_queue(
        self, queue: str, *, exchange: str, routing_keys: Sequence[str]
    ) -> None:
        channel = self._require_channel()
        try:
            async with asyncio.timeout(_OPERATION_TIMEOUT_S):
                await self._check_queue(queue)
                # On a robust channel, so declared again after a reconnection: even a
                # RabbitMQ that lost its definitions then routes our messages again.
                declared = await channel.declare_queue(
                    queue, durable=True, arguments=QUEUE_ARGUMENTS
                )
                for key in routing_keys:
                    await declared.bind(exchange, key)
        except _TRANSIENT as exc:
            raise errors.BrokerConnectionError(f"declaring queue {queue}: {exc!r}") from exc
        except AMQPError as exc:
            raise errors.BrokerError(f"declaring queue {queue}: {exc!r}") from exc

    async def _check_queue(self, queue: str) -> None:
        """Declares `queue` on a channel of its own first: a queue of another type closes the
        channel that declares it, and that must not be the publishers' channel."""
        connection = self._publisher
        if connection is None:
            raise errors.BrokerConnectionError("the AMQP broker is not connected")
        channel = await connection.channel()
        try:
            await channel.declare_queue(queue, durable=True, arguments=QUEUE_ARGUMENTS)
        except ChannelPreconditionFailed as exc:
            raise errors.ConfigError(self._wrong_queue(queue, exc)) from exc
        finally:
            with contextlib.suppress(Exception):
                await channel.close()

    def _wrong_queue(self, queue: str, exc: BaseException) -> str:
        vhost = urllib.parse.unquote(urllib.parse.urlsplit(self._urls[0]).path[1:]) or "/"
        return (
            f"RabbitMQ queue {queue!r} (vhost {vhost!r}) exists with other arguments than "
            f"tideflow declares ({exc}). tideflow's durable queues are quorum queues "
            f"(x-queue-type: quorum), replicated across a cluster's nodes; this one is probably "
            f"a classic queue made by an earlier tideflow. To replace it: stop tideflow's "
            f"processes, let the queue drain (rabbitmqctl list_queues -p {vhost} name messages), "
            f"delete it (rabbitmqctl delete_queue -p {vhost} {queue}), then run "
            f"`tideflow migrate` again, which declares it as a quorum queue."
        )

    async def publish(self, messages: Sequence[Message]) -> None:
        await self._publish(
            [(m.exchange, m.routing_key, _outgoing(m), m.mandatory) for m in messages]
        )

    async def _publish(self, outgoing: Sequence[_Outgoing]) -> None:
        channel = self._require_channel()
        pending = list(outgoing)
        backoff = Backoff(base_s=_RETRY_FIRST_S, cap_s=_RETRY_MAX_S)
        patience_s = _PUBLISH_PATIENCE_S + len(pending) / 1000
        try:
            async with asyncio.timeout(patience_s):
                while pending:
                    # All at once, then every confirmation: one round trip for the batch.
                    results = await asyncio.gather(
                        *(self._publish_one(channel, *item) for item in pending),
                        return_exceptions=True,
                    )
                    failed = [
                        (i, r) for i, r in zip(pending, results, strict=True) if r is not None
                    ]
                    for (exchange, key, _, _), exc in failed:
                        _raise_unless_transient(exc, f"{key!r} on {exchange!r}")
                    if failed and self._channel is not channel:
                        raise errors.BrokerConnectionError("the AMQP broker was closed")
                    if failed:
                        what = f"publishing to {self._where}"
                        await pause(backoff, logger, what, failed[0][1])
                    pending = [item for item, _ in failed]
        except TimeoutError as exc:
            raise errors.BrokerConnectionError(
                f"RabbitMQ did not confirm {len(outgoing)} messages within {patience_s:.0f}s"
            ) from exc

    async def _publish_one(
        self,
        channel: AbstractChannel,
        exchange: str,
        key: str,
        message: aio_pika.Message,
        mandatory: bool,
    ) -> None:
        target = self._exchanges.get(exchange) or await channel.get_exchange(exchange, ensure=False)
        await target.publish(message, key, mandatory=mandatory)
        _metrics.PUBLISHED.labels("amqp", exchange).inc()

    async def consume(self, queue: str, *, prefetch: int) -> AsyncIterator[Delivery]:
        self._require_consuming()
        connection = self._consumer
        backoff = Backoff(base_s=_RETRY_FIRST_S, cap_s=_RETRY_MAX_S)
        while connection is not None and self._consumer is connection:
            session: _Session | None = None
            try:
                async with asyncio.timeout(_OPERATION_TIMEOUT_S):
                    session = _Session(await connection.channel())
                    await session.channel.set_qos(prefetch_count=prefetch)
                    source = await session.channel.declare_queue(
                        queue, durable=True, arguments=QUEUE_ARGUMENTS
                    )
                # aio-pika's robust iterator waits through reconnections, but it can end on
                # some paths (a 60 s limit on one): then this loop starts a new consumer.
                session.iterator = source.iterator()
                async for message in session.iterator:
                    if _is_stale(message):
                        continue
                    backoff.reset()
                    session.outstanding += 1
                    _metrics.CONSUMED.labels("amqp", queue).inc()
                    delivery = _AmqpDelivery(self, session, queue, message)
                    if delivery.delivery_count >= self._delivery_limit:
                        await delivery.dead_letter(
                            delivery_limit_reason(delivery.delivery_count, self._delivery_limit)
                        )
                        continue
                    yield delivery
                delay = backoff.next_delay()
                logger.info("the consumer of %s ended; another in %.1fs", queue, delay)
            except Exception as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # aio-pika's iterator may replace a cancellation with its cleanup's error.
                    raise asyncio.CancelledError from exc
                if isinstance(exc, ChannelPreconditionFailed):
                    raise errors.BrokerError(self._wrong_queue(queue, exc)) from exc
                # A lost connection is both (AMQPConnectionError is an OSError): it passes.
                if isinstance(exc, AMQPError) and not isinstance(exc, _TRANSIENT):
                    raise errors.BrokerError(f"consuming {queue}: {exc!r}") from exc
                if not isinstance(exc, _TRANSIENT):
                    raise
                delay = backoff.next_delay()
                logger.log(
                    logging.WARNING if backoff.should_warn() else logging.DEBUG,
                    "consuming %s from %s interrupted (attempt %d: %r); again in %.1fs",
                    queue,
                    self._where,
                    backoff.attempt,
                    exc,
                    delay,
                )
            finally:
                if session is not None:
                    await session.end()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._closing.wait()

    async def subscribe(
        self, exchange: str, routing_keys: Sequence[str]
    ) -> AsyncIterator[Delivery]:
        backoff = Backoff(base_s=_RETRY_FIRST_S, cap_s=_RETRY_MAX_S)
        self._require_consuming()
        while (connection := self._consumer) is not None:
            try:
                async for delivery in _subscription(connection, exchange, routing_keys):
                    backoff.reset()
                    yield delivery
            except (*_TRANSIENT, AMQPError) as exc:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                await pause(backoff, logger, f"subscribing to {exchange}", exc, stop=self._closing)


def _outgoing(
    message: Message | AbstractIncomingMessage, headers: HeadersType | None = None
) -> aio_pika.Message:
    return aio_pika.Message(
        message.body,
        content_type=message.content_type,
        message_id=message.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
    )


async def _subscription(
    connection: AbstractRobustConnection, exchange: str, routing_keys: Sequence[str]
) -> AsyncIterator[Delivery]:
    channel = await connection.channel()
    try:
        # Our own name, not a server-generated one: a robust channel re-declares its queues
        # after a reconnection, and names starting "amq." may not be declared by clients.
        name = f"tideflow.subscriber.{uuid.uuid4().hex}"
        async with asyncio.timeout(_OPERATION_TIMEOUT_S):
            queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
            for key in routing_keys:
                await queue.bind(exchange, key)
        async with queue.iterator(no_ack=True) as messages:
            async for message in messages:
                yield Notice(
                    message.body,
                    message.routing_key or "",
                    message.message_id,
                    message.content_type,
                )
    finally:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_OPERATION_TIMEOUT_S):
                await channel.close()


def _raise_unless_transient(exc: BaseException, what: str) -> None:
    if not isinstance(exc, Exception):
        raise exc
    returned = exc.message.delivery if isinstance(exc, PublishError) and exc.message else None
    if isinstance(returned, Basic.Return):  # a mandatory publish that reached no queue
        raise errors.UnroutableError(returned.exchange, returned.routing_key or "") from exc
    if isinstance(exc, DeliveryError):
        raise errors.BrokerError(f"RabbitMQ refused or could not route {what}") from exc
    if not isinstance(exc, _TRANSIENT):
        raise errors.BrokerError(f"publishing {what}: {exc!r}") from exc


def _is_stale(message: AbstractIncomingMessage) -> bool:
    """Whether the channel that delivered `message` is gone (it will be delivered again)."""
    try:
        return message.channel.is_closed
    except ChannelInvalidStateError:
        return True


class _Session:
    """One consumer's channel. Once its consumer is cancelled, it stays open until the
    deliveries in hand are settled, so that work finishing after a shutdown can still ack."""

    def __init__(self, channel: AbstractChannel) -> None:
        self.channel = channel
        self.iterator: AbstractQueueIterator | None = None
        self.outstanding = 0
        self.is_ended = False

    async def settled(self) -> None:
        self.outstanding -= 1
        if self.is_ended and self.outstanding <= 0:
            await self._close(self.channel.close())

    async def end(self) -> None:
        self.is_ended = True
        if self.iterator is not None:
            # Cancels the consumer and requeues what it received but never yielded.
            await self._close(self.iterator.close())
        # A consumer that is not cancelled would be restored with its channel, feeding an
        # iterator nobody reads; aio-pika forgets the tag of a consumer it has cancelled.
        is_cancelled = isinstance(self.iterator, QueueIterator) and not self.iterator.consumer_tag
        if self.outstanding <= 0 or not is_cancelled or self.channel.is_closed:
            await self._close(self.channel.close())

    async def _close(self, closing: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(_OPERATION_TIMEOUT_S):
                await closing
        except Exception:  # the channel is dead or dying either way
            logger.debug("closing a consumer failed", exc_info=True)


class _AmqpDelivery(Delivery):
    def __init__(
        self, broker: AmqpBroker, session: _Session, queue: str, message: AbstractIncomingMessage
    ) -> None:
        self._broker = broker
        self._session = session
        self._queue = queue
        self._message = message
        self._is_settled = False
        self.body = message.body
        self.routing_key = message.routing_key or ""
        self.message_id = message.message_id
        self.content_type = message.content_type
        self.redelivered = bool(message.redelivered)
        # Set by a quorum queue on a message that came back; a publisher's own header of that
        # name on a first delivery is not believed.
        count = message.headers.get(_DELIVERY_COUNT) if self.redelivered else None
        self.delivery_count = count if isinstance(count, int) and count > 0 else 0

    async def _settle(self, what: str, action: Callable[[], Awaitable[None]]) -> None:
        if self._is_settled:
            return
        self._is_settled = True
        try:
            async with asyncio.timeout(_OPERATION_TIMEOUT_S):
                await action()
        except (*_TRANSIENT, AMQPError) as exc:  # its channel is gone: it will come again
            logger.warning("cannot %s %s from %s (%r)", what, self.message_id, self._queue, exc)
        finally:
            await self._session.settled()

    async def ack(self) -> None:
        await self._settle("ack", self._message.ack)

    async def requeue(self) -> None:
        await self._settle("requeue", lambda: self._message.nack(requeue=True))

    async def dead_letter(self, reason: str) -> None:
        if self._is_settled:
            return
        if not _is_stale(self._message):
            copy = _outgoing(
                self._message,
                {
                    **{k: v for k, v in self._message.headers.items() if k != _DELIVERY_COUNT},
                    "x-tideflow-reason": reason,
                    "x-tideflow-queue": self._queue,
                    "x-tideflow-exchange": self._message.exchange or "",
                    "x-tideflow-routing-key": self.routing_key,
                },
            )
            try:
                await self._broker._publish([(topology.INTERNAL_EXCHANGE, "dead", copy, True)])
            except errors.BrokerError as exc:
                logger.warning("cannot dead-letter message %s (%s)", self.message_id, exc)
                await self.requeue()
                return
        await self.ack()
