from __future__ import annotations

from tideflow import errors

from ._base import Store


def create_store(url: str) -> Store:
    """The store for a URL: `sqlite:///relative/path`, `sqlite:////absolute/path`,
    `sqlite://:memory:`, or `postgresql://...`."""
    if url.startswith("sqlite://"):
        from ._sqlite import SqliteStore

        rest = url.removeprefix("sqlite://")
        path = rest[1:] if rest.startswith("/") else rest
        return SqliteStore(path or ":memory:")
    if url.startswith(("postgresql://", "postgres://")):
        from ._postgres import PostgresStore

        return PostgresStore(url)
    raise errors.ConfigError(
        f"TIDEFLOW_DATABASE_URL: {url!r} is neither sqlite:/// nor postgresql://"
    )
