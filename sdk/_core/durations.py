from __future__ import annotations

import datetime
import re

from tideflow import errors

_UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")


def to_ms(value: datetime.timedelta | int | str, *, field: str = "duration") -> int:
    """A duration as whole milliseconds: a timedelta, int ms, or "30s" / "5m" / "1h30m" / "2d"."""
    if isinstance(value, bool):
        raise errors.ConfigError(f"{field}: expected a duration, got {value!r}")
    if isinstance(value, datetime.timedelta):
        ms = int(value.total_seconds() * 1000)
    elif isinstance(value, int):
        ms = value
    elif isinstance(value, str):
        ms = _parse(value.strip(), field)
    else:
        raise errors.ConfigError(f"{field}: expected a duration, got {value!r}")
    if ms < 0:
        raise errors.ConfigError(f"{field}: a duration cannot be negative, got {value!r}")
    return ms


def _parse(text: str, field: str) -> int:
    pos, total = 0, 0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNITS_MS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise errors.ConfigError(
            f"{field}: {text!r} is not a duration (use e.g. '30s', '5m', '2h', '1d', '1w')"
        )
    return total


def to_utc_ms(moment: datetime.datetime, *, field: str = "datetime") -> int:
    if moment.tzinfo is None:
        raise errors.ConfigError(f"{field}: datetime must be timezone-aware, got {moment!r}")
    return int(moment.timestamp() * 1000)
