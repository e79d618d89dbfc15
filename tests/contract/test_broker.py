"""The `Broker` contract: the in-process and the RabbitMQ broker route, deliver and settle alike."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
import pytest
from tideflow import errors
from tideflow.broker import (
    Broker,
    DeadLetter,
    Delivery,
    JobMessage,
    MemoryBroker,
    Message,
    OutcomeMessage,
    create_broker,
    event_message,
    topology,
)

DEADLINE_S = 10.0
QUIET_S = 0.5


@pytest.fixture(params=["memory", pytest.param("amqp", marks=pytest.mark.rabbitmq)])
def broker_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("rabbitmq_url")
    return url


@pytest.fixture
async def broker(broker_url: str) -> AsyncIterator[Broker]:
    broker = create_broker(broker_url)
    await broker.connect()
    try:
        yield broker
    finally:
        await broker.close()


class Inbox:
    """Consumes a queue in the background; the test takes deliveries as they come."""

    def __init__(self, broker: Broker, queue: str, *, prefetch: int) -> None:
        self.received: asyncio.Queue[Delivery] = asyncio.Queue()
        self.task = asyncio.create_task(self._consume(broker, queue, prefetch))

    async def _consume(self, broker: Broker, queue: str, prefetch: int) -> None:
        async for delivery in broker.consume(queue, prefetch=prefetch):
            await self.received.put(delivery)

    async def take(self, count: int = 1) -> list[Delivery]:
        async with asyncio.timeout(DEADLINE_S):
            return [await self.received.get() for _ in range(count)]

    async def take_one(self) -> Delivery:
        return (await self.take(1))[0]

    async def is_quiet(self) -> bool:
        """Whether nothing more arrives for a while (only for what must *not* happen)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(QUIET_S):
                await self.received.get()
                return False
        return True

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


InboxFactory = Callable[..., Awaitable[Inbox]]


@pytest.fixture
async def inbox(broker: Broker) -> AsyncIterator[InboxFactory]:
    inboxes: list[Inbox] = []

    async def open_inbox(
        queue: str, *, prefetch: int = 100, bind: tuple[str, list[str]] | None = None
    ) -> Inbox:
        if bind is not None:
            await broker.declare_queue(queue, exchange=bind[0], routing_keys=bind[1])
        inboxes.append(Inbox(broker, queue, prefetch=prefetch))
        return inboxes[-1]

    yield open_inbox
    for opened in inboxes:
        await opened.stop()


def internal(key: str, body: bytes, message_id: str | None = None) -> Message:
    return Message(topology.INTERNAL_EXCHANGE, key, body, message_id=message_id)


async def test_events_are_routed_to_every_queue_whose_topic_pattern_matches_their_name(
    broker: Broker, inbox: InboxFactory
) -> None:
    everything = await inbox("test.all", bind=(topology.EVENTS_EXCHANGE, ["#"]))
    one_word = await inbox("test.shop-one", bind=(topology.EVENTS_EXCHANGE, ["shop.*"]))
    any_words = await inbox("test.shop-any", bind=(topology.EVENTS_EXCHANGE, ["shop.#"]))
    names = ["shop.order", "shop.order.created", "billing.paid", "shop", "shop.end"]

    await broker.publish([event_message({"name": name, "data": {}}) for name in names])

    async def names_in(box: Inbox, count: int) -> list[str]:
        return [json.loads(d.body)["name"] for d in await box.take(count)]

    # "shop.end" matches every pattern and comes last: once it is in, nothing else is on its way.
    assert await names_in(everything, 5) == names
    assert await names_in(one_word, 2) == ["shop.order", "shop.end"]
    assert await names_in(any_words, 4) == ["shop.order", "shop.order.created", "shop", "shop.end"]
    assert await everything.is_quiet()


async def test_internal_keys_reach_only_their_own_queue(
    broker: Broker, inbox: InboxFactory
) -> None:
    for app in ("app-a", "app-b"):
        await broker.declare_queue(
            topology.jobs_queue(app),
            exchange=topology.INTERNAL_EXCHANGE,
            routing_keys=[topology.jobs_key(app)],
        )
    jobs = [JobMessage(f"job-{n}", "run", "fn", app) for n in (1, 2) for app in ("app-a", "app-b")]
    outcomes = [OutcomeMessage(("job-1",)), OutcomeMessage(("job-2", "job-3"))]

    await broker.publish([j.to_message() for j in jobs] + [o.to_message() for o in outcomes])
    await broker.publish([event_message({"name": "app/after", "data": {}})])

    for app in ("app-a", "app-b"):
        received = await (await inbox(topology.jobs_queue(app))).take(2)
        assert [JobMessage.decode(d.body) for d in received] == [j for j in jobs if j.app_id == app]
        assert [d.routing_key for d in received] == [topology.jobs_key(app)] * 2
    received = await (await inbox(topology.SCHEDULER_OUTCOMES_QUEUE)).take(2)
    assert [OutcomeMessage.decode(d.body) for d in received] == outcomes
    event = await (await inbox(topology.SCHEDULER_EVENTS_QUEUE)).take_one()
    assert event.routing_key == "app/after"


async def test_a_message_that_reaches_no_queue_is_refused_with_its_exchange_and_key(
    broker: Broker, inbox: InboxFactory
) -> None:
    box = await inbox("test.routed", bind=(topology.INTERNAL_EXCHANGE, ["routed"]))

    with pytest.raises(errors.UnroutableError) as refused:
        await broker.publish([internal("nowhere", b"lost")])

    assert (refused.value.exchange, refused.value.routing_key) == (
        topology.INTERNAL_EXCHANGE,
        "nowhere",
    )
    await broker.publish([internal("routed", b"after")])
    assert (await box.take_one()).body == b"after"
    assert await box.is_quiet()


async def test_an_unroutable_message_fails_its_batch(broker: Broker, inbox: InboxFactory) -> None:
    box = await inbox("test.batch-routed", bind=(topology.INTERNAL_EXCHANGE, ["routed"]))

    with pytest.raises(errors.UnroutableError):
        await broker.publish([internal("routed", b"first"), internal("nowhere", b"lost")])

    if isinstance(broker, MemoryBroker):
        # The memory broker routes the whole batch before delivering any of it.
        assert await box.is_quiet()


async def test_a_queue_that_several_bindings_match_gets_one_copy(
    broker: Broker, inbox: InboxFactory
) -> None:
    box = await inbox("test.overlap", bind=(topology.EVENTS_EXCHANGE, ["overlap.*", "#"]))

    await broker.publish([event_message({"name": "overlap.one", "data": {}})])

    assert json.loads((await box.take_one()).body)["name"] == "overlap.one"
    assert await box.is_quiet()


async def test_prefetch_limits_the_deliveries_in_hand(broker: Broker, inbox: InboxFactory) -> None:
    box = await inbox("test.prefetch", prefetch=2, bind=(topology.INTERNAL_EXCHANGE, ["pf"]))
    await broker.publish([internal("pf", str(n).encode()) for n in range(5)])

    first = await box.take(2)
    assert await box.is_quiet()
    await first[0].ack()
    third = await box.take_one()
    assert await box.is_quiet()
    for delivery in (first[1], third):
        await delivery.ack()
    rest = await box.take(2)

    assert [d.body for d in [*first, third, *rest]] == [b"0", b"1", b"2", b"3", b"4"]


async def test_a_requeued_message_comes_again_marked_redelivered(
    broker: Broker, inbox: InboxFactory
) -> None:
    box = await inbox("test.requeue", bind=(topology.INTERNAL_EXCHANGE, ["rq"]))
    await broker.publish([internal("rq", b"payload", "id-1")])

    first = await box.take_one()
    await first.requeue()
    again = await box.take_one()
    await again.ack()

    assert (first.body, first.message_id, first.redelivered) == (b"payload", "id-1", False)
    assert (again.body, again.message_id, again.redelivered) == (b"payload", "id-1", True)
    assert await box.is_quiet()


async def dead_letters(broker: Broker, request: pytest.FixtureRequest) -> list[DeadLetter]:
    """What the dead letters hold: the memory broker's list, or RabbitMQ's dead queue."""
    if isinstance(broker, MemoryBroker):
        return broker.dead_letters
    url: str = request.getfixturevalue("rabbitmq_url")
    found: list[DeadLetter] = []
    async with await aio_pika.connect(url) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            topology.DEAD_LETTER_QUEUE, durable=True, arguments={"x-queue-type": "quorum"}
        )
        async with asyncio.timeout(DEADLINE_S):
            while not found:
                message = await queue.get(fail=False)
                if message is None:
                    await asyncio.sleep(0.05)
                    continue
                headers = message.headers
                assert message.routing_key == "dead"
                assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
                original = Message(
                    str(headers["x-tideflow-exchange"]),
                    str(headers["x-tideflow-routing-key"]),
                    message.body,
                    content_type=str(message.content_type),
                    message_id=message.message_id,
                )
                reason = str(headers["x-tideflow-reason"])
                found.append(DeadLetter(str(headers["x-tideflow-queue"]), original, reason))
    return found


async def test_a_dead_lettered_message_leaves_its_queue_for_the_dead_letters(
    broker: Broker, inbox: InboxFactory, request: pytest.FixtureRequest
) -> None:
    box = await inbox("test.dlq", bind=(topology.INTERNAL_EXCHANGE, ["dl"]))
    poison = internal("dl", b"\xc1 not msgpack", "poison-1")
    await broker.publish([poison])

    delivery = await box.take_one()
    await delivery.dead_letter("not a job message")

    assert await dead_letters(broker, request) == [
        DeadLetter("test.dlq", poison, "not a job message")
    ]
    # Reconnecting returns whatever was left unacked: the dead-lettered message must not be.
    await box.stop()
    await broker.close()
    await broker.connect()
    box = await inbox("test.dlq")
    await broker.publish([internal("dl", b"next")])
    assert (await box.take_one()).body == b"next"


async def test_settling_twice_is_harmless(broker: Broker, inbox: InboxFactory) -> None:
    box = await inbox("test.twice", bind=(topology.INTERNAL_EXCHANGE, ["tw"]))
    await broker.publish([internal("tw", b"once")])

    delivery = await box.take_one()
    await delivery.ack()
    await delivery.ack()
    await delivery.requeue()
    await delivery.dead_letter("too late")

    assert await box.is_quiet()
    if isinstance(broker, MemoryBroker):
        assert broker.dead_letters == []


async def test_a_batch_of_a_thousand_is_confirmed_and_delivered_in_order(
    broker: Broker, inbox: InboxFactory
) -> None:
    await broker.declare_queue(
        "test.batch", exchange=topology.INTERNAL_EXCHANGE, routing_keys=["batch"]
    )
    sent = [internal("batch", f"{n}".encode(), f"m-{n}") for n in range(1000)]

    await broker.publish(sent)

    box = await inbox("test.batch", prefetch=1000)
    received = await box.take(1000)
    assert [(d.body, d.message_id) for d in received] == [(m.body, m.message_id) for m in sent]


async def test_message_id_content_type_and_routing_key_round_trip(
    broker: Broker, inbox: InboxFactory
) -> None:
    box = await inbox("test.props", bind=(topology.EVENTS_EXCHANGE, ["props.#"]))
    sent = [
        Message(topology.EVENTS_EXCHANGE, "props.a", b"{}", "application/json", "evt-1"),
        Message(topology.EVENTS_EXCHANGE, "props.b.c", b"\x90", "application/msgpack", "evt-2"),
    ]

    await broker.publish(sent)

    received = await box.take(2)
    assert [
        Message(topology.EVENTS_EXCHANGE, d.routing_key, d.body, d.content_type or "", d.message_id)
        for d in received
    ] == sent
    assert [d.redelivered for d in received] == [False, False]


async def test_closing_the_broker_ends_its_consumers(broker: Broker, inbox: InboxFactory) -> None:
    box = await inbox("test.close", bind=(topology.INTERNAL_EXCHANGE, ["cl"]))
    await broker.publish([internal("cl", b"in hand")])
    await box.take_one()
    assert await broker.ping()

    await broker.close()

    async with asyncio.timeout(DEADLINE_S):
        await box.task
    assert not await broker.ping()
    await broker.close()


async def test_a_message_given_back_too_often_is_dead_lettered_and_the_next_one_flows(
    broker_url: str, request: pytest.FixtureRequest, figures: list[str]
) -> None:
    limit = 3
    broker = create_broker(broker_url, delivery_limit=limit)
    await broker.connect()
    try:
        await broker.declare_queue(
            "test.limit", exchange=topology.INTERNAL_EXCHANGE, routing_keys=["lim"]
        )
        poison, good = internal("lim", b"poison", "p-1"), internal("lim", b"good", "g-1")
        await broker.publish([poison])
        box = Inbox(broker, "test.limit", prefetch=1)
        try:
            for attempt in range(limit):
                delivery = await box.take_one()
                assert (delivery.body, delivery.delivery_count) == (b"poison", attempt)
                await delivery.requeue()  # as a consumer that fails on it would
            await broker.publish([good])
            assert (await box.take_one()).body == b"good"
        finally:
            await box.stop()
        assert await dead_letters(broker, request) == [
            DeadLetter(
                "test.limit",
                poison,
                "delivery limit: delivered 3 times without being settled "
                "(TIDEFLOW_DELIVERY_LIMIT=3)",
            )
        ]
        figures.append(
            f"delivery limit 3 ({broker_url.split(':')[0]}): a message given back 3 times "
            "dead-lettered with its reason; the message behind it delivered"
        )
    finally:
        await broker.close()
