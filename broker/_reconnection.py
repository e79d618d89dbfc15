"""Backoff for aio-pika's reconnections, and its drivers' logs of them, throttled.

aio-pika's robust connection re-opens a lost connection every `reconnect_interval` seconds: a
fixed number, with no backoff of its own. But it reads that attribute again before each pause,
calls the connection's close callbacks after the loss and after each failed attempt, and its
reconnect callbacks once back (all public). `Reconnection` uses those to set the pause from a
`Backoff` (exponential, capped, jittered: a fleet of workers does not reconnect in step after a
RabbitMQ restart) and to log the attempts throttled, with the masked URL; the drivers' own lines
about the same failures (one or two a second, a traceback on the loss) are dropped.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence

import aio_pika
from aio_pika.abc import AbstractConnection, AbstractRobustConnection
from aiormq.exceptions import AMQPConnectionError
from tideflow._core.backoff import Backoff
from yarl import URL

logger = logging.getLogger(__name__)

# An attempt is one TCP connect, cheap for the server: after a restart, work resumes within
# 2 s; the jitter spreads a fleet's attempts over each pause rather than the pauses growing long.
FIRST_S = 0.25
MAX_S = 2.0
# The connections whose failures we log ourselves.
_MANAGED: weakref.WeakSet[AbstractRobustConnection] = weakref.WeakSet()


class Reconnection:
    """Paces and reports the reconnections of one robust connection (see `attach`).

    Args:
        where: the connection's URL, masked.
        is_closing: whether the broker is closing it (then a close is no failure).
        urls: the nodes of the cluster, if several: each attempt goes to the next one.
    """

    def __init__(
        self, where: str, *, is_closing: Callable[[], bool], urls: Sequence[str] = ()
    ) -> None:
        self._where = where
        self._is_closing = is_closing
        self._urls = [URL(url) for url in urls]
        self._backoff = Backoff(base_s=FIRST_S, cap_s=MAX_S)

    def attach(self, connection: AbstractRobustConnection) -> None:
        connection.close_callbacks.add(self._failed)
        connection.reconnect_callbacks.add(self._reconnected)
        _MANAGED.add(connection)
        quiet_driver_logs()

    def _failed(self, connection: AbstractConnection | None, exc: BaseException | None) -> None:
        if self._is_closing():
            return
        delay = self._backoff.next_delay()
        if isinstance(connection, aio_pika.RobustConnection):
            connection.reconnect_interval = delay
            if len(self._urls) > 1:
                # aio-pika reads `url` again for each attempt: a node that went away is
                # replaced by the next one of its cluster.
                current = self._urls.index(connection.url) if connection.url in self._urls else -1
                connection.url = self._urls[(current + 1) % len(self._urls)]
        logger.log(
            logging.WARNING if self._backoff.should_warn() else logging.DEBUG,
            "RabbitMQ at %s unreachable (attempt %d: %r); reconnecting within %.1fs",
            self._where,
            self._backoff.attempt,
            exc,
            delay,
        )

    def _reconnected(self, connection: AbstractRobustConnection | None) -> None:
        if self._backoff.attempt:
            logger.info(
                "RabbitMQ at %s reachable again after %d attempts",
                self._where,
                self._backoff.attempt,
            )
        self._backoff.reset()
        if isinstance(connection, aio_pika.RobustConnection):
            connection.reconnect_interval = FIRST_S


class _DriverLogFilter(logging.Filter):
    """Drops the drivers' lines about connections failing, which they also raise or report to
    our callbacks: whoever retries logs them, throttled (`tideflow.cli` at start, `Reconnection`
    once connected). aiormq logs every failed attempt at ERROR, and a lost connection with a
    traceback; aio-pika logs "closed, reconnecting" even for a first attempt that never
    connected (and will not reconnect: it raised)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("error when creating transport"):
            return False
        if message.startswith("Cancelling cause reader exited abnormally"):
            return not (record.exc_info and isinstance(record.exc_info[1], AMQPConnectionError))
        if message.startswith(("Connection to %s closed", "Connection attempt to")):
            connection = record.args[0] if isinstance(record.args, tuple) and record.args else None
            never_connected = getattr(connection, "connection_attempt", 1) == 0
            return not (never_connected or connection in _MANAGED)
        return True


def quiet_driver_logs() -> None:
    """Installs the filter of the drivers' connection failure lines (once)."""
    for name in ("aiormq.connection", "aio_pika.robust_connection"):
        driver_logger = logging.getLogger(name)
        if not any(isinstance(f, _DriverLogFilter) for f in driver_logger.filters):
            driver_logger.addFilter(_DriverLogFilter())
