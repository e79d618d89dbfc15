from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import pathlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, TypeVar

from tideflow import errors

from . import _metrics
from ._queries import load_queries
from ._sql import SqlStore, Tx

_T = TypeVar("_T")
_MIGRATION_PREFIX = "migration_"


class _SqliteTx:
    """Runs a named query: several statements in order (its rows are those of the last that
    returns rows, its count the last statement's), lists passed as JSON for `json_each`."""

    def __init__(self, store: SqliteStore, connection: sqlite3.Connection) -> None:
        self._store = store
        self._connection = connection

    def _run(self, query: str, params: Mapping[str, Any]) -> tuple[list[dict[str, Any]], int]:
        values = {k: json.dumps(v) if isinstance(v, list) else v for k, v in params.items()}
        rows: list[dict[str, Any]] = []
        count = 0
        for statement in self._store.statements[query]:
            _metrics.STATEMENTS.labels("sqlite").inc()
            cursor = self._connection.execute(statement, values)
            if cursor.description is not None:
                rows = [dict(row) for row in cursor.fetchall()]
            count = cursor.rowcount
        return rows, count

    async def fetch(self, query: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return (await self._store.call(lambda: self._run(query, params)))[0]

    async def execute(self, query: str, params: Mapping[str, Any]) -> int:
        return (await self._store.call(lambda: self._run(query, params)))[1]

    async def fetch_each(
        self, query: str, items: Sequence[Mapping[str, Any]], params: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        def run_all() -> list[dict[str, Any]]:
            rows: list[dict[str, Any]] = []
            for item in items:
                rows.extend(self._run(query, {**params, **item})[0])
            return rows

        return await self._store.call(run_all) if items else []


class SqliteStore(SqlStore):
    """The embedded default: one SQLite file, used from one thread so the loop never blocks.

    Transactions are serialised; good for one process (`tideflow dev`), not for a cluster.
    """

    locks_rows = False

    def __init__(self, path: str) -> None:
        self.path = path
        self.queries = load_queries("sqlite")
        self.statements = {
            name: [part.strip() for part in _without_comments(text).split(";") if part.strip()]
            for name, text in self.queries.items()
        }
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def call(self, function: Callable[[], _T]) -> _T:
        if self._executor is None:
            raise errors.LifecycleError("the SQLite store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, function)
        except sqlite3.Error as exc:
            raise errors.StoreError(f"SQLite: {exc}") from exc

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="tideflow-sqlite"
        )

        def connect() -> sqlite3.Connection:
            if self.path != ":memory:":
                pathlib.Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA busy_timeout = 5000")
            connection.execute("PRAGMA synchronous = NORMAL")
            if self.path != ":memory:":
                connection.execute("PRAGMA journal_mode = WAL")
            return connection

        try:
            self._connection = await self.call(connect)
        except (OSError, errors.StoreError) as exc:
            raise errors.StoreConnectionError(
                f"cannot open SQLite database {self.path!r}: {exc}"
            ) from exc

    async def close(self) -> None:
        if self._executor is None:
            return
        connection = self._connection
        if connection is not None:
            await self.call(connection.close)
        self._executor.shutdown(wait=True)
        self._executor = None
        self._connection = None

    async def migrate(self) -> None:
        connection = self._require()
        migrations = sorted(
            (int(name.removeprefix(_MIGRATION_PREFIX)), name)
            for name in self.queries
            if name.startswith(_MIGRATION_PREFIX)
        )

        def upgrade() -> None:
            _rollback(connection)  # what a cancelled caller left open (see `_transaction`)
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            for number, name in migrations:
                if number <= version:
                    continue
                # The version is written in the migration's own transaction.
                script = f"BEGIN IMMEDIATE; {self.queries[name]}; PRAGMA user_version = {number};"
                try:
                    connection.executescript(script)
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise

        async with self._lock:
            await self.call(upgrade)

    async def ping(self) -> bool:
        try:
            async with self._transaction() as tx:
                await tx.fetch("ping", {})
        except errors.TideflowError:
            return False
        return True

    def _require(self) -> sqlite3.Connection:
        if self._connection is None:
            raise errors.LifecycleError("the SQLite store is not open")
        return self._connection

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Tx]:
        """One transaction, safe to cancel at any await.

        A cancelled caller's statements are not withdrawn: they are queued in the store's one
        thread and run after it has gone, its BEGIN included. The thread runs them in order
        (FIFO), so they all run before the next caller's BEGIN, which, under the lock, first
        rolls back whatever transaction they left open.
        """
        connection = self._require()
        async with self._lock:
            await self.call(lambda: _begin(connection))
            try:
                yield _SqliteTx(self, connection)
            except BaseException:
                _metrics.TRANSACTIONS.labels("sqlite", "rollback").inc()
                await asyncio.shield(self.call(lambda: _rollback(connection)))
                raise
            _metrics.TRANSACTIONS.labels("sqlite", "commit").inc()
            await asyncio.shield(self.call(lambda: connection.execute("COMMIT")))


def _begin(connection: sqlite3.Connection) -> None:
    # No transaction of a live caller can be open here (the lock is held): one that is was
    # left by a cancelled caller, or by a COMMIT that failed.
    _rollback(connection)
    connection.execute("BEGIN IMMEDIATE")


def _rollback(connection: sqlite3.Connection) -> None:
    # SQLite ends a transaction by itself on some errors; ROLLBACK would then fail and hide
    # the error that caused it.
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def _without_comments(sql: str) -> str:
    return "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
