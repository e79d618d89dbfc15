from __future__ import annotations

from tideflow import errors
from tideflow._core.urls import mask_url

from ._base import Store

CLUSTER_HINT = 'pip install "tideflow[cluster]"'


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
            if (exc.name or "").startswith("tideflow"):
                raise  # our own bug, not a missing driver
            missing = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise errors.ConfigError(
                "TIDEFLOW_DATABASE_URL: PostgreSQL needs the cluster extra: "
                f"{CLUSTER_HINT} ({missing})"
            ) from exc
        return PostgresStore(url)
    raise errors.ConfigError(
        f"TIDEFLOW_DATABASE_URL: {mask_url(url)!r} is neither sqlite:/// nor postgresql://"
    )
