from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from tideflow.broker import Delivery


async def batches(
    deliveries: AsyncIterator[Delivery], *, max_size: int
) -> AsyncIterator[list[Delivery]]:
    """Groups deliveries into micro-batches: whatever has arrived, up to `max_size`, without
    waiting for more once one is in hand."""
    buffer: asyncio.Queue[Delivery | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for delivery in deliveries:
                await buffer.put(delivery)
        finally:
            await buffer.put(None)

    task = asyncio.create_task(pump(), name="tideflow-batch-pump")
    try:
        while True:
            first = await buffer.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < max_size and not buffer.empty():
                item = buffer.get_nowait()
                if item is None:
                    yield batch
                    return
                batch.append(item)
            yield batch
    finally:
        task.cancel()
        # Awaiting the pump re-raises its own error (a lost broker), for the caller to handle.
        with contextlib.suppress(asyncio.CancelledError):
            await task
