"""Priority: a run whose `run` expression gives p (-600..600) is ordered as if it had been
queued p seconds earlier."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from tideflow._core.expressions import Expression, compile_expression

logger = logging.getLogger(__name__)

LIMIT_S = 600


@dataclasses.dataclass(frozen=True)
class Spec:
    run: Expression

    def seconds(self, event: dict[str, Any]) -> int:
        """The run's priority in seconds, clamped to -600..600; 0 if it does not evaluate."""
        try:
            value = self.run.evaluate({"event": event})
            seconds = int(value)
        except Exception as exc:  # noqa: BLE001 - a bad priority must not block the run
            logger.warning("priority %r did not evaluate: %s", self.run.text, exc)
            return 0
        return max(-LIMIT_S, min(LIMIT_S, seconds))


def offset_ms(spec: Spec | None, event: dict[str, Any]) -> int:
    """How much earlier than its queued time a run stands in line."""
    return 0 if spec is None else spec.seconds(event) * 1000


def parse(config: dict[str, Any] | None) -> Spec | None:
    return None if config is None else Spec(compile_expression(config["run"]))
