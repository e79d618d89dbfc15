"""Singleton: one run at a time per key; `skip` starts no new run while one runs, `cancel`
cancels the running one and starts the new one."""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression

from .keys import compile_key

SKIP = "skip"
CANCEL = "cancel"


@dataclasses.dataclass(frozen=True)
class Spec:
    key: Expression | None
    mode: str


def parse(config: dict[str, Any] | None) -> Spec | None:
    if config is None:
        return None
    return Spec(compile_key(config.get("key")), config.get("mode", SKIP))
