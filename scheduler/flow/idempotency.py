"""Idempotency: one run per key value per 24 hours."""

from __future__ import annotations

import dataclasses

from tideflow._core.expressions import Expression, compile_expression

WINDOW_MS = 24 * 3600 * 1000


@dataclasses.dataclass(frozen=True)
class Spec:
    key: Expression


def parse(config: str | None) -> Spec | None:
    return None if config is None else Spec(compile_expression(config))
