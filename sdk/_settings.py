from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from . import errors
from ._core.durations import to_ms

_N = TypeVar("_N", int, float)
# Fields read from a variable other than TIDEFLOW_<FIELD>: a duration string, kept in seconds.
_VARIABLE_OF_FIELD = {"session_ttl_s": "SESSION_TTL"}
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
    step_timeout_s: float = 900.0
    shutdown_grace_s: float = 25.0
    event_keys: tuple[str, ...] = ()
    """Every accepted event key: `TIDEFLOW_EVENT_KEY`, then `TIDEFLOW_EVENT_KEYS` (rotation)."""
    auth_proxy_header: str | None = None
    """A header that a trusted proxy in front of the dashboard sets once it has authenticated
    the user: a request carrying it needs no session."""
    metrics_auth: bool = False
    """Whether `/metrics` requires the signing key, like `/v1`."""
    session_ttl_s: int = 12 * 3600
    """How long a dashboard login lasts."""
    connect_timeout_s: float = 120.0
    fetch_concurrency: int = 32
    """Offloaded requests (`step.fetch`, `step.ai.infer`) a worker makes at once."""
    fetch_allow: tuple[str, ...] = ()
    """Hosts offloaded requests may reach (`host`, `host:port`, `*.domain`); empty: any."""

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
        event_keys = tuple(
            dict.fromkeys(
                key.strip()
                for key in [
                    env.get("TIDEFLOW_EVENT_KEY", ""),
                    *env.get("TIDEFLOW_EVENT_KEYS", "").split(","),
                ]
                if key.strip()
            )
        )
        signing_key = optional("SIGNING_KEY")
        auth_proxy_header = optional("AUTH_PROXY_HEADER")
        metrics_auth = _flag(env, "METRICS_AUTH")
        if signing_key is None:
            # Without a signing key nothing is closed, so these would do nothing.
            for name, value in (
                ("AUTH_PROXY_HEADER", auth_proxy_header),
                ("METRICS_AUTH", metrics_auth),
            ):
                if value:
                    raise errors.ConfigError(f"TIDEFLOW_{name}: needs TIDEFLOW_SIGNING_KEY set")
        session_ttl_ms = to_ms(text("SESSION_TTL", "12h"), field="TIDEFLOW_SESSION_TTL")
        if session_ttl_ms < 1000:
            raise errors.ConfigError("TIDEFLOW_SESSION_TTL: must be at least 1s")
        return cls(
            database_url=text("DATABASE_URL", defaults.database_url),
            broker_url=text("BROKER_URL", defaults.broker_url),
            # The key the SDK sends: the first accepted one.
            event_key=event_keys[0] if event_keys else None,
            event_keys=event_keys,
            signing_key=signing_key,
            auth_proxy_header=auth_proxy_header,
            metrics_auth=metrics_auth,
            session_ttl_s=session_ttl_ms // 1000,
            api_url=text("API_URL", defaults.api_url).rstrip("/"),
            log_level=level,
            retry_backoff_base_ms=_number(
                env, "RETRY_BACKOFF_BASE_MS", defaults.retry_backoff_base_ms, int
            ),
            lease_s=_number(env, "LEASE_S", defaults.lease_s, float),
            env=text("ENV", defaults.env),
            metrics_port=_number(env, "METRICS_PORT", 0, int) or None,
            connect_timeout_s=_number(env, "CONNECT_TIMEOUT_S", defaults.connect_timeout_s, float),
            step_timeout_s=_number(env, "STEP_TIMEOUT_S", defaults.step_timeout_s, float),
            shutdown_grace_s=_number(env, "SHUTDOWN_GRACE_S", defaults.shutdown_grace_s, float),
            fetch_concurrency=_number(env, "FETCH_CONCURRENCY", defaults.fetch_concurrency, int),
            fetch_allow=_hosts(env.get("TIDEFLOW_FETCH_ALLOW", "")),
        )

    @classmethod
    def variables(cls) -> frozenset[str]:
        """Every `TIDEFLOW_*` variable `from_env` reads (a deployment should set no other)."""
        return frozenset(
            f"TIDEFLOW_{_VARIABLE_OF_FIELD.get(field.name, field.name.upper())}"
            for field in dataclasses.fields(cls)
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
        # The AMQP client's debug lines dump every frame, message bodies included (an
        # `ai.infer` step's explicit API key travels in one): never below INFO.
        for name in ("aiormq", "aio_pika"):
            logging.getLogger(name).setLevel(
                max(logging.INFO, logging.getLevelName(self.log_level))
            )


def _hosts(raw: str) -> tuple[str, ...]:
    hosts = tuple(host.strip().lower() for host in raw.split(",") if host.strip())
    for host in hosts:
        name = host.removeprefix("*.")
        if not name or "/" in name or "*" in name or "://" in host:
            raise errors.ConfigError(
                f"TIDEFLOW_FETCH_ALLOW: {host!r} is not a host, host:port or *.domain"
            )
    return hosts


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(f"TIDEFLOW_{name}", "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise errors.ConfigError(f"TIDEFLOW_{name}: {raw!r} is neither true nor false")


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
