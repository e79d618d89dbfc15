"""Debounce: one run per key, `period` after the last event of a burst, with that event;
`timeout` caps the delay from the burst's first event."""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression

from .keys import compile_key


@dataclasses.dataclass(frozen=True)
class Spec:
    period_ms: int
    key: Expression | None
    timeout_ms: int | None


def parse(config: dict[str, Any] | None) -> Spec | None:
    if config is None:
        return None
    timeout = config.get("timeout_ms")
    return Spec(
        int(config["period_ms"]),
        compile_key(config.get("key")),
        None if timeout is None else int(timeout),
    )
