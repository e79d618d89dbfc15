"""A process's heartbeat: it records itself in the store every few seconds, so that the
dashboard can show which schedulers, workers and APIs are alive."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tideflow import errors

if TYPE_CHECKING:
    from ._base import Store

logger = logging.getLogger(__name__)

INTERVAL_S = 5.0


def now_ms() -> int:
    return int(time.time() * 1000)


async def record(store: Store, process_id: str, kind: str, app_ids: Sequence[str]) -> None:
    """One heartbeat, shielded: a cancelled caller must not abandon a write midway (an
    embedded store would keep its transaction open)."""
    await asyncio.shield(_record(store, process_id, kind, app_ids))


async def _record(store: Store, process_id: str, kind: str, app_ids: Sequence[str]) -> None:
    try:
        await store.record_heartbeat(process_id, kind, app_ids, now_ms())
    except errors.TideflowError as exc:
        # A store that is down (or closing) only delays the next beat.
        logger.debug("heartbeat of %s not recorded: %s", process_id, exc)


async def beat(
    store: Store,
    process_id: str,
    kind: str,
    app_ids: Sequence[str],
    *,
    interval_s: float = INTERVAL_S,
) -> None:
    """Records the process now and every `interval_s` until cancelled."""
    while True:
        await record(store, process_id, kind, app_ids)
        await asyncio.sleep(interval_s)
