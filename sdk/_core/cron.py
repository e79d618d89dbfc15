"""Cron expressions: five fields, with an optional `TZ=Area/City ` prefix."""

from __future__ import annotations

import croniter
from tideflow import errors
from tideflow._types import is_name


def parse_cron(text: str) -> tuple[str, str]:
    """Splits `TZ=Area/City m h dom mon dow` into (timezone, expression), validating both."""
    import zoneinfo

    if not is_name(text):
        raise errors.ConfigError(f"TriggerCron.cron: expected a cron string, got {text!r}")
    tz, expression = "UTC", text.strip()
    if expression.startswith(("TZ=", "CRON_TZ=")):
        head, _, expression = expression.partition(" ")
        tz = head.split("=", 1)[1]
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise errors.ConfigError(
                f"TriggerCron.cron: unknown time zone {tz!r} in {text!r}"
            ) from None
    if len(expression.split()) != 5 or not croniter.croniter.is_valid(expression):
        raise errors.ConfigError(f"TriggerCron.cron: {text!r} is not a five-field cron expression")
    return tz, expression
