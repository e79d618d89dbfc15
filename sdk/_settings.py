from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from . import errors
from ._core.durations import to_ms

_N = TypeVar("_N", int, float)
# Fields read from a variable other than TIDEFLOW_<FIELD>: a duration string, kept in the
# field's unit.
_VARIABLE_OF_FIELD = {"session_ttl_s": "SESSION_TTL", "retention_ms": "RETENTION"}
_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
"""Room for a send of 5,000 events of 2 KiB each, or of twenty events at the 512 KiB limit."""


@dataclasses.dataclass(frozen=True)
class Rate:
    """`limit` per `period_ms`, e.g. `TIDEFLOW_EVENT_KEY_RATE=1000/s`."""

    limit: int
    period_ms: int

    @classmethod
    def parse(cls, raw: str, *, field: str) -> Rate:
        count, slash, per = raw.partition("/")
        if not slash or not count.strip().isdigit() or int(count) < 1:
            raise errors.ConfigError(
                f"{field}: {raw!r} is not a rate (use e.g. '1000/s', '50/10s')"
            )
        per = per.strip()
        period_ms = to_ms(f"1{per}" if per in ("s", "m", "h", "d") else per, field=field)
        if period_ms < 1:
            raise errors.ConfigError(f"{field}: the period of {raw!r} must be at least 1ms")
        return cls(int(count), period_ms)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The `TIDEFLOW_*` settings, read once at an entry point and passed down.

    Each field is read from `TIDEFLOW_<FIELD>` (`session_ttl_s` from `TIDEFLOW_SESSION_TTL`, a
    duration such as `12h`); the documentation's settings reference lists them all.
    """

    database_url: str = "sqlite:///.tideflow/dev.db"
    """Where the state lives: `postgresql://user:pass@host:5432/db` for a cluster, or
    `sqlite:///path` (one process: `tideflow dev`)."""
    broker_url: str = "memory://"
    """`amqp://user:pass@host:5672/vhost` for a cluster, or `memory://` (inside one process
    only: `tideflow dev`)."""
    event_key: str | None = None
    """The key `POST /e/{key}` requires when set (unset: any key, as in dev); the SDK sends it."""
    signing_key: str | None = None
    """Signs internal traffic and realtime tokens; when set, every `/v1` route and the
    dashboard require it (`Authorization: Bearer <key>`, or the dashboard's login)."""
    api_url: str = "http://127.0.0.1:8288"
    """Where `client.send` posts events when the broker is not `amqp://`, and where a worker
    without an AMQP broker publishes realtime messages."""
    log_level: str = "INFO"
    """`DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`."""
    retry_backoff_base_ms: int = 15_000
    """The first retry's delay; it doubles at each attempt, with ±20% jitter, capped at an
    hour."""
    lease_s: float = 30.0
    """A step job's lease: its worker renews it while the step runs; a job whose lease lapses
    (its worker died) is dispatched again."""
    env: str = "production"
    """The environment's name, which `Concurrency(scope="env")` limits share."""
    metrics_port: int | None = None
    """The port a scheduler or worker serves Prometheus metrics on (the API serves them on
    `/metrics`); unset: none."""
    step_timeout_s: float = 900.0
    """A step body still running after this long fails with `StepTimeout` and is retried."""
    shutdown_grace_s: float = 25.0
    """On SIGTERM a worker takes no new job and waits this long for its running steps, then
    abandons them (their leases lapse and they run elsewhere)."""
    event_keys: tuple[str, ...] = ()
    """More accepted event keys, comma-separated, to rotate `TIDEFLOW_EVENT_KEY` (the SDK
    sends the first). As a field: every accepted key, `TIDEFLOW_EVENT_KEY`'s first."""
    auth_proxy_header: str | None = None
    """A header that a trusted proxy in front of the dashboard sets once it has authenticated
    the user: a request carrying it needs no session (the proxy must strip it from what
    clients send); needs `TIDEFLOW_SIGNING_KEY`."""
    metrics_auth: bool = False
    """Whether `/metrics` requires the signing key, like `/v1` (`true` or `false`); needs
    `TIDEFLOW_SIGNING_KEY`."""
    session_ttl_s: int = 12 * 3600
    """How long a dashboard login lasts (a duration: `30m`, `12h`, `7d`)."""
    connect_timeout_s: float = 120.0
    """How long a process keeps trying to reach its database and broker at start, with backoff,
    before it exits with the masked URL and the last error."""
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    """The largest request body the API reads, on every route; larger ones get 413."""
    max_run_state_bytes: int = 4 * 1024 * 1024
    """The most a run's step outputs may hold in all; the step that would go over fails the
    run."""
    event_key_rate: Rate | None = None
    """Events per period accepted on `/e/{key}` for each event key, per API process (unset: no
    limit); more get 429 with `Retry-After`. A rate: `1000/s`, `50/10s`, `3000/m`."""
    delivery_limit: int = 20
    """How many times a broker message may be delivered: one that came back unsettled that
    often (its consumer died each time) goes to the dead letters, reason "delivery limit"."""
    retention_ms: int = 7 * 86_400_000
    """How long finished runs, their steps, and events that started no live run are kept."""
    fetch_concurrency: int = 32
    """Offloaded requests (`step.fetch`, `step.ai.infer`) a worker makes at once."""
    fetch_allow: tuple[str, ...] = ()
    """Hosts offloaded requests may reach (`host`, `host:port`, `*.domain`); empty: any."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Reads the settings from `environ` (default: `os.environ`); unset ones keep their
        defaults.

        Raises:
            ConfigError: a value is not valid (a number that is not one, an unknown log level,
                an option that needs `TIDEFLOW_SIGNING_KEY` without it), naming the variable.
        """
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
        retention_ms = to_ms(text("RETENTION", "7d"), field="TIDEFLOW_RETENTION")
        if retention_ms < 1000:
            raise errors.ConfigError("TIDEFLOW_RETENTION: must be at least 1s")
        raw_rate = optional("EVENT_KEY_RATE")
        return cls(
            retention_ms=retention_ms,
            max_body_bytes=_number(env, "MAX_BODY_BYTES", defaults.max_body_bytes, int),
            max_run_state_bytes=_number(
                env, "MAX_RUN_STATE_BYTES", defaults.max_run_state_bytes, int
            ),
            event_key_rate=(
                None if raw_rate is None else Rate.parse(raw_rate, field="TIDEFLOW_EVENT_KEY_RATE")
            ),
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
            delivery_limit=_number(env, "DELIVERY_LIMIT", defaults.delivery_limit, int),
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
        """Sets up the root logger at `log_level`, as the `tideflow` command does."""
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
