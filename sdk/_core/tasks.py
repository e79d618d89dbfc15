from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

_ASK_AGAIN_S = 0.5


async def cancel_and_wait(tasks: Collection[asyncio.Future[Any]]) -> None:
    """Cancels tasks and waits until every one has ended, cancelling again those still running
    every half second. Under Python 3.11, `asyncio.wait_for` (which psycopg's pool uses) drops a
    cancellation that arrives just as what it waits for completes (CPython gh-86296): the task
    runs on, and a plain cancel-then-gather would wait for it forever."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=_ASK_AGAIN_S)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a task that failed on its way out is not reported
