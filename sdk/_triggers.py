from __future__ import annotations

import dataclasses
from typing import Any

import croniter

from . import errors
from ._expressions import compile_expression
from ._types import is_name


@dataclasses.dataclass(frozen=True)
class TriggerEvent:
    """Runs the function for each event named `event` (a trailing `*` matches a prefix) for
    which the CEL `expression` over `event`, if given, is true."""

    event: str
    expression: str | None = None

    def __post_init__(self) -> None:
        if not is_name(self.event):
            raise errors.ConfigError(
                f"TriggerEvent.event: must be a non-empty name, got {self.event!r}"
            )
        if self.expression is not None:
            compile_expression(self.expression)

    def to_config(self) -> dict[str, Any]:
        return {"event": self.event, "expression": self.expression}


@dataclasses.dataclass(frozen=True)
class TriggerCron:
    """Runs the function on a five-field cron schedule, with an optional `TZ=Area/City ` prefix."""

    cron: str

    def __post_init__(self) -> None:
        parse_cron(self.cron)

    def to_config(self) -> dict[str, Any]:
        return {"cron": self.cron}


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


Trigger = TriggerEvent | TriggerCron
