"""The optional `cluster` extra: what to say when its drivers are missing."""

from __future__ import annotations

from tideflow import errors

CLUSTER_HINT = 'pip install "tideflow[cluster]"'


def missing_cluster_extra(exc: ImportError, *, variable: str, what: str) -> errors.ConfigError:
    """The error for a URL whose driver is not installed. Re-raises an ImportError of
    tideflow's own modules: that is a bug, not a missing extra."""
    if (exc.name or "").startswith("tideflow"):
        raise exc
    missing = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return errors.ConfigError(
        f"{variable}: {what} needs the cluster extra: {CLUSTER_HINT} ({missing})"
    )
