"""Rate limit: at most `limit` runs per `period` per key; the events beyond start no run."""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression

from .keys import compile_key


@dataclasses.dataclass(frozen=True)
class Spec:
    limit: int
    period_ms: int
    key: Expression | None


def parse(config: dict[str, Any] | None) -> Spec | None:
    if config is None:
        return None
    return Spec(int(config["limit"]), int(config["period_ms"]), compile_key(config.get("key")))
