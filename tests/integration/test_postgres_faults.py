"""The PostgreSQL store under faults: racing migrations, a server restart, no server at all."""

from __future__ import annotations

import asyncio
import socket
import time

import psycopg
import pytest
from tideflow import errors
from tideflow.store import Store, create_store
from tideflow.store import models as m
from tideflow.store._postgres import PostgresStore
from tideflow.store._queries import load_queries

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

RESTART = ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "main", "restart"]


async def restart_postgres() -> None:
    process = await asyncio.create_subprocess_exec(
        *RESTART, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(process.communicate(), timeout=50)
    assert process.returncode == 0, output.decode()


async def until_it_answers(store: Store, deadline_s: float) -> list[errors.StoreError]:
    """Calls the store until a call succeeds; returns the failures seen on the way."""
    failures: list[errors.StoreError] = []
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            await store.list_functions()
        except errors.StoreError as exc:
            failures.append(exc)
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
        else:
            return failures


async def test_concurrent_migrations_leave_one_schema(postgres_url: str) -> None:
    stores = [create_store(postgres_url) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        await asyncio.gather(*(store.migrate() for store in stores))
        await stores[0].migrate()
        await stores[1].register_functions("app", [{"function_id": "app-fn"}], 1)
        assert await stores[2].list_functions() == [{"function_id": "app-fn"}]
    finally:
        await asyncio.gather(*(store.close() for store in stores))
    async with await psycopg.AsyncConnection.connect(postgres_url) as connection:
        cursor = await connection.execute("SELECT version FROM tideflow_schema")
        recorded = [version for (version,) in await cursor.fetchall()]
    # Each migration the store knows recorded once, though four stores raced to apply them.
    known = sorted(
        int(name.removeprefix("migration_"))
        for name in load_queries("postgres")
        if name.startswith("migration_")
    )
    assert sorted(recorded) == known == list(range(1, len(known) + 1))


async def test_the_store_keeps_working_after_a_server_restart(postgres_url: str) -> None:
    store = create_store(postgres_url)
    await store.open()
    try:
        await store.migrate()
        await store.register_functions("app", [{"function_id": "before"}], 1)
        await restart_postgres()
        failures = await until_it_answers(store, deadline_s=30)
        # Failures while the server comes back are connection errors, nothing else.
        assert [type(exc) for exc in failures] == [errors.StoreConnectionError] * len(failures)
        await store.register_functions("app", [{"function_id": "after"}], 2)
        assert await store.list_functions() == [{"function_id": "after"}]
        assert await store.ping() is True
    finally:
        await store.close()


async def test_a_refused_write_is_a_store_error_and_rolls_back(postgres_url: str) -> None:
    store = create_store(postgres_url)
    await store.open()
    try:
        await store.migrate()
        good = m.EventRecord("evt-good", "app/thing", {}, 1, 1)
        bad = m.EventRecord("evt-bad", "app/\x00", {}, 1, 1)  # text cannot hold NUL
        with pytest.raises(errors.StoreError) as raised:
            await store.insert_events([good, bad])
        assert type(raised.value) is errors.StoreError
        assert isinstance(raised.value.__cause__, psycopg.Error)
        assert await store.list_events(None, 10) == []
        await store.insert_events([good])
        assert await store.list_events(None, 10) == [good]
    finally:
        await store.close()


async def test_a_deadlock_is_a_plain_store_error(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        await stores[0].migrate()
        jobs = []
        for number in range(2):
            evt = m.EventRecord(f"evt-{number}", "app/thing", {}, 1, 1)
            change = m.CreateRun(f"run-{number}", "fn", "app", evt.internal_id, [])
            (job,) = (await stores[0].process_events([(evt, [change])], 1)).jobs
            await stores[0].claim_job(job.job_id, "w", 1, 100)
            jobs.append(job.job_id)
        both_locked_one = asyncio.Barrier(2)

        async def lock_in_order(store: PostgresStore, first: str, second: str) -> None:
            # Two transactions locking the same two rows in opposite orders.
            async with store._transaction() as tx:
                await tx.execute("renew_lease", {"job_id": first, "owner": "w", "lease_until": 200})
                await both_locked_one.wait()
                await tx.execute(
                    "renew_lease", {"job_id": second, "owner": "w", "lease_until": 200}
                )

        results = await asyncio.gather(
            lock_in_order(stores[0], jobs[0], jobs[1]),
            lock_in_order(stores[1], jobs[1], jobs[0]),
            return_exceptions=True,
        )
        failures = [result for result in results if result is not None]
        assert [type(failure) for failure in failures] == [errors.StoreError]
        assert isinstance(failures[0].__cause__, psycopg.errors.DeadlockDetected)
        assert await stores[1].renew_lease(jobs[0], "w", 300) is True
    finally:
        for store in stores:
            await store.close()


async def test_open_on_a_closed_port_fails_fast(unused_port: int) -> None:
    store = create_store(f"postgresql://postgres@127.0.0.1:{unused_port}/nothing")
    started = time.monotonic()
    with pytest.raises(errors.StoreConnectionError):
        await store.open()
    assert time.monotonic() - started < 10
    assert await store.ping() is False
    await store.close()


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
