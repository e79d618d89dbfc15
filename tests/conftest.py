"""Shared fixtures: real servers for the cluster backends, isolated per test.

A server-backed test skips when its server cannot be reached, except in CI (`CI=true`),
where it fails: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from tideflow.store import Store, create_store

POSTGRES_ADMIN_URL = os.environ.get(
    "TIDEFLOW_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RABBITMQ_HOST = os.environ.get("TIDEFLOW_TEST_RABBITMQ_HOST", "127.0.0.1")


_FIGURES: list[str] = []


@pytest.fixture
def figures() -> list[str]:
    """Lines a test appends to have them printed in the run's summary (its measured figures:
    cases tried, runs lost, duplicates), whether or not output is captured."""
    return _FIGURES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FIGURES:
        terminalreporter.section("figures")
        for line in _FIGURES:
            terminalreporter.write_line(line)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_server(name: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{message} (CI must not skip server-backed tests)")
    pytest.skip(message)


def _psql(sql: str, database: str = "postgres") -> None:
    subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            database,
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ],
        check=True,
        capture_output=True,
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    require_server("PostgreSQL", "127.0.0.1", 5432)
    name = f"tideflow_test_{uuid.uuid4().hex[:12]}"
    _psql(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def rabbitmq_url() -> Iterator[str]:
    """A fresh RabbitMQ virtual host for one test, deleted afterwards."""
    require_server("RabbitMQ", RABBITMQ_HOST, 5672)
    vhost = f"tideflow-test-{uuid.uuid4().hex[:12]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    try:
        yield f"amqp://guest:guest@{RABBITMQ_HOST}:5672/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


# The store under test in tests/contract: each contract test runs on SQLite and on PostgreSQL.


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    store = create_store(store_url)
    await store.open()
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()
