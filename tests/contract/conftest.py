"""The store under test: each contract test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator

import pytest
from tideflow.store import Store, create_store


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
