"""How many messages wait in a queue: the work-queue depth and the scheduler's backlog."""

from __future__ import annotations

import asyncio
import logging

from ._base import Broker
from ._memory import MemoryBroker

logger = logging.getLogger(__name__)
_TIMEOUT_S = 5.0


async def ready_messages(broker: Broker, queues: list[str]) -> dict[str, int]:
    """Ready messages per queue; a queue that does not exist (yet) or cannot be read is left
    out. On RabbitMQ, passive declares on a channel of its own over the consuming connection
    (no new connection to open, or to hang in when the process stops)."""
    if isinstance(broker, MemoryBroker):
        return {queue: broker.depth(queue) for queue in queues}
    # Imported here: aio-pika is only installed with the cluster extra.
    from aio_pika.exceptions import AMQPError

    from ._amqp import AmqpBroker

    connection = broker._consumer if isinstance(broker, AmqpBroker) else None
    if connection is None or not connection.connected.is_set():
        return {}
    depths: dict[str, int] = {}
    try:
        async with asyncio.timeout(_TIMEOUT_S):
            channel = await connection.channel()
            try:
                for queue in queues:
                    declared = await channel.declare_queue(queue, passive=True)
                    depths[queue] = declared.declaration_result.message_count or 0
            finally:
                if not channel.is_closed:
                    await channel.close()
    except (AMQPError, OSError, TimeoutError, RuntimeError) as exc:
        # A queue not declared yet closes the channel: the next sample reads them again.
        logger.debug("cannot read queue depths: %r", exc)
    return depths
