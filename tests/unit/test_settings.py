from __future__ import annotations

from collections.abc import Iterator

import pytest
import tideflow
from tideflow._settings import Rate


class _Recording(dict[str, str]):
    """An environment that notes every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must ask for variables by name, not scan the environment")


def test_settings_read_exactly_the_variables_they_declare() -> None:
    environ = _Recording()
    tideflow.Settings.from_env(environ)
    assert environ.asked == tideflow.Settings.variables()


def test_new_settings_have_their_documented_defaults() -> None:
    settings = tideflow.Settings.from_env({})
    assert (settings.step_timeout_s, settings.shutdown_grace_s) == (900.0, 25.0)
    tuned = tideflow.Settings.from_env(
        {"TIDEFLOW_STEP_TIMEOUT_S": "2.5", "TIDEFLOW_SHUTDOWN_GRACE_S": "1"}
    )
    assert (tuned.step_timeout_s, tuned.shutdown_grace_s) == (2.5, 1.0)


def test_retention_defaults_to_seven_days_and_reads_the_duration_forms() -> None:
    assert tideflow.Settings.from_env({}).retention_ms == 7 * 86_400_000
    for text, ms in (("30s", 30_000), ("2h", 7_200_000), ("1d", 86_400_000), ("1w", 604_800_000)):
        assert tideflow.Settings.from_env({"TIDEFLOW_RETENTION": text}).retention_ms == ms


def test_a_retention_that_is_not_a_duration_or_under_a_second_is_refused() -> None:
    with pytest.raises(tideflow.errors.ConfigError, match="TIDEFLOW_RETENTION: '7 days'"):
        tideflow.Settings.from_env({"TIDEFLOW_RETENTION": "7 days"})
    with pytest.raises(tideflow.errors.ConfigError, match="TIDEFLOW_RETENTION: must be at least"):
        tideflow.Settings.from_env({"TIDEFLOW_RETENTION": "500ms"})


def test_limits_settings_read_rates_and_refuse_what_is_not_one() -> None:
    settings = tideflow.Settings.from_env(
        {"TIDEFLOW_EVENT_KEY_RATE": "1000/s", "TIDEFLOW_MAX_BODY_BYTES": "1024"}
    )
    assert settings.event_key_rate == Rate(1000, 1000)
    assert settings.max_body_bytes == 1024
    assert tideflow.Settings.from_env({}).event_key_rate is None
    assert tideflow.Settings.from_env({}).max_body_bytes == 10 * 1024 * 1024
    assert Rate.parse("50/10s", field="f") == Rate(50, 10_000)
    for bad in ("1000", "x/s", "0/s", "5/", "5/fortnight"):
        with pytest.raises(tideflow.errors.ConfigError, match="TIDEFLOW_EVENT_KEY_RATE"):
            tideflow.Settings.from_env({"TIDEFLOW_EVENT_KEY_RATE": bad})
