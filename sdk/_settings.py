from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from . import errors

_N = TypeVar("_N", int, float)
_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The `TIDEFLOW_*` settings, read once at an entry point and passed down."""

    database_url: str = "sqlite:///.tideflow/dev.db"
    broker_url: str = "memory://"
    event_key: str | None = None
    signing_key: str | None = None
    api_url: str = "http://127.0.0.1:8288"
    log_level: str = "INFO"
    retry_backoff_base_ms: int = 15_000
    lease_s: float = 30.0
    env: str = "production"
    metrics_port: int | None = None
    connect_timeout_s: float = 120.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()

        def text(name: str, default: str) -> str:
            return env.get(f"TIDEFLOW_{name}", "").strip() or default

        def optional(name: str) -> str | None:
            return env.get(f"TIDEFLOW_{name}", "").strip() or None

        level = text("LOG_LEVEL", defaults.log_level).upper()
        if level not in _LEVELS:
            raise errors.ConfigError(
                f"TIDEFLOW_LOG_LEVEL: {level!r} is not one of {sorted(_LEVELS)}"
            )
        return cls(
            database_url=text("DATABASE_URL", defaults.database_url),
            broker_url=text("BROKER_URL", defaults.broker_url),
            event_key=optional("EVENT_KEY"),
            signing_key=optional("SIGNING_KEY"),
            api_url=text("API_URL", defaults.api_url).rstrip("/"),
            log_level=level,
            retry_backoff_base_ms=_number(
                env, "RETRY_BACKOFF_BASE_MS", defaults.retry_backoff_base_ms, int
            ),
            lease_s=_number(env, "LEASE_S", defaults.lease_s, float),
            env=text("ENV", defaults.env),
            metrics_port=_number(env, "METRICS_PORT", 0, int) or None,
            connect_timeout_s=_number(env, "CONNECT_TIMEOUT_S", defaults.connect_timeout_s, float),
        )

    def configure_logging(self) -> None:
        logging.basicConfig(
            level=self.log_level,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        # Every request of `tideflow send` and of the API's clients is not news.
        logging.getLogger("httpx").setLevel(
            max(logging.WARNING, logging.getLevelName(self.log_level))
        )


def _number(env: Mapping[str, str], name: str, default: _N, kind: Callable[[str], _N]) -> _N:
    raw = env.get(f"TIDEFLOW_{name}", "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise errors.ConfigError(f"TIDEFLOW_{name}: {raw!r} is not a number") from None
    if value <= 0:
        raise errors.ConfigError(f"TIDEFLOW_{name}: must be positive, got {raw!r}")
    return value
