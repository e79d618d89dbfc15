from __future__ import annotations

from tideflow import errors
from tideflow._core.extras import missing_cluster_extra
from tideflow._core.urls import mask_url

from ._base import Store


def create_store(url: str) -> Store:
    """The store for a URL: `sqlite:///relative/path`, `sqlite:////absolute/path`,
    `sqlite://:memory:`, or `postgresql://...`.

    Raises:
        ConfigError: the URL names no known store, or PostgreSQL without the `cluster` extra.
    """
    if url.startswith("sqlite://"):
        from ._sqlite import SqliteStore

        rest = url.removeprefix("sqlite://")
        path = rest[1:] if rest.startswith("/") else rest
        return SqliteStore(path or ":memory:")
    if url.startswith(("postgresql://", "postgres://")):
        try:
            from ._postgres import PostgresStore
        except ImportError as exc:
            raise missing_cluster_extra(
                exc, variable="TIDEFLOW_DATABASE_URL", what="PostgreSQL"
            ) from exc
        return PostgresStore(url)
    raise errors.ConfigError(
        f"TIDEFLOW_DATABASE_URL: {mask_url(url)!r} is neither sqlite:/// nor postgresql://"
    )
