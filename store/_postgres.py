"""The cluster store: PostgreSQL through a psycopg connection pool."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from tideflow import errors
from tideflow._core.urls import mask_url, redact

from . import _metrics, _pool_metrics
from ._pool_log import POOL_LOGGER, PoolLog
from ._queries import load_queries
from ._sql import SqlStore, Tx

logger = logging.getLogger(__name__)

_MIGRATION_PREFIX = "migration_"
_POOL_RECONNECT_TIMEOUT_S = 30.0
# SQLSTATEs of operational errors that end one transaction while the server is fine (class
# 40: deadlock, serialisation failure; a statement or lock timeout): ordinary, retryable
# store errors. psycopg files them under OperationalError, beside lost connections.
_NOT_CONNECTION_CLASS = "40"
_NOT_CONNECTION_STATES = frozenset({"57014", "55P03"})


def _is_connection_problem(exc: psycopg.Error) -> bool:
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    state = exc.sqlstate or ""
    return not (state.startswith(_NOT_CONNECTION_CLASS) or state in _NOT_CONNECTION_STATES)


@contextlib.contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turns driver exceptions into tideflow errors; the caller's own exceptions pass."""
    try:
        yield
    except psycopg.Error as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # psycopg answers a cancelled task by cancelling the statement on the server and
            # raising QueryCanceled: the caller was cancelled, and must see that, not a store
            # error it would retry (a loop catching StoreError would never stop).
            raise asyncio.CancelledError from exc
        # Connection problems include the pool's PoolTimeout (no connection in time).
        if _is_connection_problem(exc):
            raise errors.StoreConnectionError(f"PostgreSQL {action}: {exc}") from exc
        raise errors.StoreError(f"PostgreSQL {action}: {exc}") from exc


class _PostgresTx:
    def __init__(
        self, queries: Mapping[str, str], connection: psycopg.AsyncConnection[Any]
    ) -> None:
        self._queries = queries
        self._connection = connection

    def _sql(self, query: str) -> str:
        # The text comes from our own SQL file, never from input; parameters travel apart.
        return self._queries[query]

    async def fetch(self, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        _metrics.STATEMENTS.labels("postgres").inc()
        with _translated(query):
            async with self._connection.cursor(row_factory=dict_row) as cursor:
                await cursor.execute(self._sql(query), params)
                return await cursor.fetchall()

    async def execute(self, query: str, params: Mapping[str, Any]) -> int:
        _metrics.STATEMENTS.labels("postgres").inc()
        with _translated(query):
            async with self._connection.cursor() as cursor:
                await cursor.execute(self._sql(query), params)
                return cursor.rowcount

    async def fetch_each(
        self, query: str, items: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        if not items:
            return []
        return await self.fetch(query, {**params, "items": json.dumps(list(items))})

    async def script(self, query: str) -> None:
        """Runs several statements: without parameters psycopg uses the simple protocol."""
        with _translated(query):
            await self._connection.execute(self._sql(query))


class PostgresStore(SqlStore):
    """The cluster store: a pool of connections to PostgreSQL, shared by any number of
    schedulers, workers and API processes (row locks and unique constraints keep them apart).
    """

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.url = url
        self.queries = load_queries("postgres")
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout_s = connect_timeout_s
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None
        self._pool_log: PoolLog | None = None

    async def open(self) -> None:
        """Connects once, or raises `StoreConnectionError`: the caller owns the retry schedule
        at start (`tideflow.cli` retries with backoff); afterwards the pool reconnects.

        Raises:
            ConfigError: the URL is not a valid PostgreSQL URL (retrying cannot help).
            StoreConnectionError: PostgreSQL cannot be reached, or refused the connection.
        """
        if self._pool is not None:
            return
        try:
            conninfo_to_dict(self.url)
        except psycopg.ProgrammingError as exc:
            raise errors.ConfigError(
                f"invalid PostgreSQL URL {mask_url(self.url)}: {self._redacted(exc)}"
            ) from exc
        # One direct attempt first: the pool would retry until its timeout and then report
        # only that it timed out, where this names the cause (refused, unknown database, ...).
        try:
            probe = await psycopg.AsyncConnection.connect(
                self.url, connect_timeout=self._connect_timeout
            )
        except psycopg.Error as exc:
            raise errors.StoreConnectionError(
                f"cannot reach PostgreSQL: {self._redacted(exc)}"
            ) from exc
        await probe.close()
        pool = self._new_pool()
        self._log_pool(pool)
        try:
            await pool.open(wait=True, timeout=self._connect_timeout_s)
        except psycopg.Error as exc:
            await self._close_pool(pool)
            raise errors.StoreConnectionError(
                f"cannot reach PostgreSQL: {self._redacted(exc)}"
            ) from exc
        except BaseException:  # cancelled: leave no pool workers behind
            await asyncio.shield(self._close_pool(pool))
            raise
        self._pool = pool
        _pool_metrics.track(pool)

    @property
    def _connect_timeout(self) -> int:
        return max(1, round(self._connect_timeout_s))

    def _redacted(self, exc: BaseException) -> str:
        # libpq quotes the part of a URL it cannot parse, which may be the password; its
        # further lines are generic hints ("Is the server running on that host ...?").
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        return redact(lines[0], self.url)

    def _new_pool(self) -> AsyncConnectionPool[psycopg.AsyncConnection[Any]]:
        return AsyncConnectionPool(
            self.url,
            min_size=self._min_size,
            max_size=self._max_size,
            # Autocommit, so that every transaction is an explicit `transaction()` block.
            # A bounded connect, so that a server gone silent (not refusing) costs the pool's
            # background attempts seconds, not the operating system's minutes.
            # Every statement planned for its own parameters: psycopg prepares a statement run
            # often, and PostgreSQL then keeps one generic plan, made while the tables were
            # small. A batch over a JSON array planned against an empty table (hash joins over
            # sequential scans) kept that plan at 100,000 rows and ran 60 times slower.
            kwargs={
                "autocommit": True,
                "connect_timeout": self._connect_timeout,
                "options": "-c plan_cache_mode=force_custom_plan",
            },
            # No check when lent out (a round trip per transaction): a connection that a
            # restarted server dropped fails its next call once, the caller retries, and the
            # pool discards the broken connection.
            # Bounds the wait for a connection, so calls fail fast while the server is down.
            timeout=self._connect_timeout_s,
            # The pool replaces a lost connection in the background with its own backoff
            # (1 s, doubling, ±10% jitter, no cap), giving up after `reconnect_timeout`. Its
            # default, 5 minutes, lets one wait grow past two minutes after the server is back;
            # 30 s caps it at 16 s, and the next caller that finds the pool short starts a
            # fresh series (demand grows the pool), so nothing stays unconnected for long.
            reconnect_timeout=_POOL_RECONNECT_TIMEOUT_S,
            reconnect_failed=self._reconnect_failed,
            open=False,
        )

    def _log_pool(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool_log = PoolLog(pool.name, self.url)
        logging.getLogger(POOL_LOGGER).addFilter(self._pool_log)

    async def _close_pool(self, pool: AsyncConnectionPool[Any]) -> None:
        try:
            await pool.close()
        finally:
            if self._pool_log is not None:
                logging.getLogger(POOL_LOGGER).removeFilter(self._pool_log)
                self._pool_log = None

    def _reconnect_failed(self, pool: AsyncConnectionPool[Any]) -> None:
        logger.warning(
            "PostgreSQL at %s: no new connection for %.0fs; trying again when one is needed",
            mask_url(self.url),
            _POOL_RECONNECT_TIMEOUT_S,
        )

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await self._close_pool(pool)

    async def migrate(self) -> None:
        migrations = {
            int(name.removeprefix(_MIGRATION_PREFIX)): name
            for name in self.queries
            if name.startswith(_MIGRATION_PREFIX)
        }
        async with self._connect() as tx:
            # The lock comes first: even `CREATE TABLE IF NOT EXISTS` races with itself.
            await tx.execute("lock_schema", {})
            await tx.execute("create_schema_table", {})
            applied = {row["version"] for row in await tx.fetch("select_schema_versions", {})}
            for version in sorted(migrations.keys() - applied):
                await tx.script(migrations[version])
                await tx.execute("insert_schema_version", {"version": version})

    async def ping(self) -> bool:
        try:
            async with self._transaction() as tx:
                await tx.fetch("ping", {})
        except errors.TideflowError:
            return False
        return True

    def _transaction(self) -> contextlib.AbstractAsyncContextManager[Tx]:
        return self._connect()

    @contextlib.asynccontextmanager
    async def _autocommit(self) -> AsyncIterator[Tx]:
        # Each statement commits on its own, without BEGIN and COMMIT round trips.
        if self._pool is None:
            raise errors.LifecycleError("the PostgreSQL store is not open")
        with _translated("statement"):
            async with self._pool.connection() as connection:
                yield _PostgresTx(self.queries, connection)

    @contextlib.asynccontextmanager
    async def _connect(self) -> AsyncIterator[_PostgresTx]:
        """One transaction on a pooled connection: committed when the block ends, rolled back
        if it raises. A deadlock surfaces as `StoreError`: the block is the caller's code, so
        it cannot be replayed here; callers retry the message instead.

        Safe to cancel at any await, here and in `_autocommit`: psycopg (3.2+) answers a
        cancelled statement by cancelling it on the server and waiting for it to end, the
        transaction block then rolls back, and the pool rolls back a connection returned in a
        transaction, or discards one still busy or broken. So a connection goes back clean or
        not at all (tests/contract/test_store_cancellation.py checks pg_stat_activity)."""
        if self._pool is None:
            raise errors.LifecycleError("the PostgreSQL store is not open")
        with _translated("transaction"):
            async with self._pool.connection() as connection:
                try:
                    async with connection.transaction():
                        yield _PostgresTx(self.queries, connection)
                except BaseException:
                    _metrics.TRANSACTIONS.labels("postgres", "rollback").inc()
                    raise
                _metrics.TRANSACTIONS.labels("postgres", "commit").inc()
