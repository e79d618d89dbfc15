"""The PostgreSQL pool's reconnection attempts, logged throttled and with the masked URL."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from tideflow._core.backoff import should_warn
from tideflow._core.urls import mask_url, redact

logger = logging.getLogger("tideflow.store._postgres")

POOL_LOGGER = "psycopg.pool"
# Pool attempts come at most ~16 s apart while the server is down (see the pool's
# `reconnect_timeout`): a longer silence means the outage ended, and a new one counts from 1.
_QUIET_S = 60.0


class PoolLog(logging.Filter):
    """Replaces psycopg_pool's warning for each failed connection attempt (two lines, without
    the server or a count) with one line naming the masked URL and the attempt: a warning for
    the 1st, 2nd, 4th, 8th, ... and a debug line for the others. Install it on the
    `psycopg.pool` logger for one pool; remove it when the pool closes.

    Args:
        pool_name: the pool whose records this handles (others pass untouched).
        url: the server's URL (shown masked).
        clock: monotonic seconds.
    """

    def __init__(
        self, pool_name: str, url: str, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self._pool_name = pool_name
        self._url = url
        self._clock = clock
        self._attempt = 0
        self._last_failure = -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        if not args or args[0] != self._pool_name:
            return True
        message = str(record.msg)
        if message.startswith("reconnection attempt in pool"):
            return False  # the store's `reconnect_failed` callback says it, with the URL
        if not message.startswith("error connecting in") or len(args) < 2:
            return True
        now = self._clock()
        if now - self._last_failure > _QUIET_S:
            self._attempt = 0
        self._last_failure = now
        self._attempt += 1
        reason = (str(args[1]).strip().splitlines() or ["?"])[0]
        logger.log(
            logging.WARNING if should_warn(self._attempt) else logging.DEBUG,
            "PostgreSQL at %s unreachable (attempt %d: %s); the pool reconnects with backoff",
            mask_url(self._url),
            self._attempt,
            redact(reason, self._url),
        )
        return False
