"""Concurrency: at most `limit` steps executing at once per key. Slots are counted (jobs that
were admitted and have not ended), never inferred from queue positions."""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression

from .keys import compile_key, key_value


@dataclasses.dataclass(frozen=True)
class Constraint:
    limit: int
    key: Expression | None
    scope: str

    def slot_key(self, function_id: str, env: str, event: dict[str, Any]) -> str:
        """The name of the slot pool a job of this run draws from: per function, or shared by
        every function of the environment or account that names the same key value."""
        value = key_value(self.key, event)
        if self.scope == "fn":
            return f"fn\x1f{function_id}\x1f{value}"
        if self.scope == "env":
            return f"env\x1f{env}\x1f{value}"
        return f"account\x1f{value}"


def parse(config: list[dict[str, Any]] | None) -> tuple[Constraint, ...]:
    return tuple(
        Constraint(int(item["limit"]), compile_key(item.get("key")), item.get("scope", "fn"))
        for item in config or ()
    )
