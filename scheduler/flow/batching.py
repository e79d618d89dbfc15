"""Batching: up to `max_size` events per run, per key, started when the batch is full or
`timeout` after its first event; events failing `if_exp` start runs of their own."""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression

from .keys import compile_key


@dataclasses.dataclass(frozen=True)
class Spec:
    max_size: int
    timeout_ms: int
    key: Expression | None
    if_exp: Expression | None


def parse(config: dict[str, Any] | None) -> Spec | None:
    if config is None:
        return None
    return Spec(
        int(config["max_size"]),
        int(config["timeout_ms"]),
        compile_key(config.get("key")),
        compile_key(config.get("if_exp")),
    )
