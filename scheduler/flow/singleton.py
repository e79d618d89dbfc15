"""Singleton: one run at a time per key; `skip` starts no new run while one has not ended,
`cancel` cancels it (as `DELETE /v1/runs/{id}` would) and starts the new one."""

from __future__ import annotations

import dataclasses
from typing import Any

import tideflow.scheduler._cancellation as cancellation
from tideflow._core.expressions import Expression
from tideflow.store import gates
from tideflow.store import models as m

from .keys import compile_key, key_value
from .run_gates import gate_key

SKIP = "skip"
CANCEL = "cancel"


@dataclasses.dataclass(frozen=True)
class Spec:
    key: Expression | None
    mode: str

    def gate(self, function_id: str, event: dict[str, Any]) -> Gate:
        key = gate_key("singleton", function_id, key_value(self.key, event))
        return Gate(key, may_cancel=self.mode == CANCEL)


@dataclasses.dataclass(frozen=True)
class Gate:
    key: str
    may_cancel: bool
    reason: str = gates.SINGLETON
    reads_holders: bool = True

    def decide(self, state: gates.GateState) -> gates.GateVerdict:
        if not state.holders:
            return gates.GateVerdict(admit=True, holds=True)
        if not self.may_cancel:
            return gates.GateVerdict(admit=False)
        changes: list[m.Change] = []
        for run in state.holders:
            changes += cancellation.cancel(
                run,
                cancellation.SINGLETON,
                "by singleton: a new run with its key started",
                state.now,
            )
        return gates.GateVerdict(
            admit=True, holds=True, cancel=state.holders, changes=tuple(changes)
        )


def parse(config: dict[str, Any] | None) -> Spec | None:
    if config is None:
        return None
    return Spec(compile_key(config.get("key")), config.get("mode", SKIP))
