from __future__ import annotations

import logging

import pytest
from tideflow.store._pool_log import PoolLog

URL = "postgresql://app:s3cret@db:5432/tideflow"


def failure(pool: str = "pool-1") -> logging.LogRecord:
    error = OSError('connection to server at "db" failed: refused\n\tIs the server running?')
    return logging.LogRecord(
        "psycopg.pool",
        logging.WARNING,
        __file__,
        1,
        "error connecting in %r: %s",
        (pool, error),
        None,
    )


def test_each_failed_attempt_becomes_one_line_with_the_masked_url_and_its_number(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tideflow.store")
    now = [0.0]
    log = PoolLog("pool-1", URL, clock=lambda: now[0])

    kept = []
    for _ in range(5):
        kept.append(log.filter(failure()))
        now[0] += 10

    assert kept == [False] * 5
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            level,
            f"PostgreSQL at postgresql://app:***@db:5432/tideflow unreachable (attempt {n}: "
            'connection to server at "db" failed: refused); the pool reconnects with backoff',
        )
        for n, level in enumerate(["WARNING", "WARNING", "DEBUG", "WARNING", "DEBUG"], start=1)
    ]


def test_a_quiet_minute_ends_the_outage_and_the_next_failure_counts_from_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="tideflow.store")
    now = [0.0]
    log = PoolLog("pool-1", URL, clock=lambda: now[0])
    for _ in range(3):
        log.filter(failure())
        now[0] += 15

    now[0] += 61
    log.filter(failure())

    assert [r.getMessage().split("(")[1][:9] for r in caplog.records] == [
        "attempt 1",
        "attempt 2",
        "attempt 3",
        "attempt 1",
    ]


def test_records_of_other_pools_and_other_messages_pass_untouched() -> None:
    log = PoolLog("pool-1", URL)
    other = logging.LogRecord(
        "psycopg.pool", logging.INFO, __file__, 1, "growing pool %r to %s", ("pool-1", 2), None
    )

    assert log.filter(failure("pool-2"))
    assert log.filter(other)
