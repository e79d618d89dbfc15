from __future__ import annotations

import dataclasses
from typing import Any

from . import errors
from ._core.cron import parse_cron
from ._core.expressions import compile_expression
from ._types import is_name


@dataclasses.dataclass(frozen=True)
class TriggerEvent:
    """Runs the function for each event named `event` (a trailing `*` matches a prefix) for
    which the CEL `expression` over `event`, if given, is true.

    Raises:
        ConfigError: `event` is empty; `ExpressionError` (a `ConfigError`) if `expression`
            does not compile.
    """

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
        """The trigger as JSON, as `GET /v1/functions` lists it."""
        return {"event": self.event, "expression": self.expression}


@dataclasses.dataclass(frozen=True)
class TriggerCron:
    """Runs the function on a five-field cron schedule, with an optional `TZ=Area/City ` prefix.

    Each tick starts one run, with the event `tideflow/scheduled.timer` (data: `cron`; `ts`:
    the tick's scheduled time in ms), exactly once across scheduler replicas.

    Raises:
        ConfigError: the expression or its time zone is not valid.
    """

    cron: str

    def __post_init__(self) -> None:
        parse_cron(self.cron)

    def to_config(self) -> dict[str, Any]:
        """The trigger as JSON, as `GET /v1/functions` lists it."""
        return {"cron": self.cron}


Trigger = TriggerEvent | TriggerCron
