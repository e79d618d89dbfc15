"""PostgreSQL going away under an open store, seen through a TCP proxy that this test cuts and
restores (the shared server itself is never touched)."""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse

import pytest
from tcp_proxy import Proxy
from tideflow.store._postgres import PostgresStore

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEADLINE_S = 30.0
PASSWORD = "hunter2-never-shown"


async def test_the_pool_reconnects_and_logs_its_attempts_throttled_with_the_masked_url(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="tideflow.store")
    url = urllib.parse.urlsplit(postgres_url)
    proxy = Proxy((url.hostname or "127.0.0.1", url.port or 5432))
    await proxy.restore()
    # The server trusts local users: the password is only there to be hidden.
    proxied = url._replace(netloc=f"postgres:{PASSWORD}@127.0.0.1:{proxy.port}").geturl()
    # A short wait for a pooled connection, so that each call fails within a second.
    store = PostgresStore(proxied, connect_timeout_s=1.0)
    await store.open()
    try:
        # Given PostgreSQL gone while the store keeps asking for connections
        await proxy.cut()

        def attempts() -> list[tuple[str, int]]:
            return [
                (record.levelname, int(match[1]))
                for record in caplog.records
                if record.name == "tideflow.store._postgres"
                and (match := re.search(r"unreachable \(attempt (\d+):", record.message))
            ]

        for _ in range(int(DEADLINE_S / 0.5)):
            assert not await store.ping()
            if len(attempts()) >= 5:
                break
            await asyncio.sleep(0.5)

        # When it is back, Then the store works again
        await proxy.restore()
        for _ in range(int(DEADLINE_S / 0.2)):
            if await store.ping():
                break
            await asyncio.sleep(0.2)
        assert await store.ping()
    finally:
        await store.close()
        await proxy.cut()

    # And the pool's attempts were logged once each, as warnings for the 1st, 2nd, 4th, ...
    seen = attempts()
    assert [n for _, n in seen[:5]] == [1, 2, 3, 4, 5], seen
    assert [level for level, _ in seen[:5]] == ["WARNING", "WARNING", "DEBUG", "WARNING", "DEBUG"]
    assert f"postgres:***@127.0.0.1:{proxy.port}" in caplog.text
    assert PASSWORD not in caplog.text
    assert "error connecting in" not in caplog.text
