"""Idempotency: one run per key value per 24 hours; later events with the key start none."""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression, compile_expression
from tideflow.store import gates

from .keys import key_value
from .run_gates import gate_key

WINDOW_MS = 24 * 3600 * 1000


@dataclasses.dataclass(frozen=True)
class Spec:
    key: Expression

    def gate(self, function_id: str, event: dict[str, Any]) -> Gate:
        return Gate(gate_key("idempotency", function_id, key_value(self.key, event)))


@dataclasses.dataclass(frozen=True)
class Gate:
    key: str
    reason: str = gates.IDEMPOTENT
    reads_holders: bool = False
    may_cancel: bool = False

    def decide(self, state: gates.GateState) -> gates.GateVerdict:
        # The window starts with the run that took the key, not with the latest event.
        if state.row is not None:
            return gates.GateVerdict(admit=False)
        return gates.GateVerdict(admit=True, row=gates.GateRow(0, 1, state.now + WINDOW_MS))


def parse(config: str | None) -> Spec | None:
    return None if config is None else Spec(compile_expression(config))
