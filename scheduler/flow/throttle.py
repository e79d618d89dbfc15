"""Throttle: GCRA over run starts per key, `limit` per `period`, `burst` back to back; the
runs beyond it wait, in order, and none is dropped.

Each run is given its start time as it is admitted: the key's theoretical arrival time (TAT)
moves one emission interval (`period / limit`) ahead per run, and a run may start once the TAT
is within `burst - 1` intervals of now. So the first `burst` runs of a burst start at once and
the rest one interval apart, in arrival order. Times are kept in units of 1/`limit` ms, so
that the interval is a whole number.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression
from tideflow.store import gates

from . import gcra
from .keys import compile_key, key_value
from .run_gates import gate_key

THROTTLED = "throttled"


@dataclasses.dataclass(frozen=True)
class Spec:
    limit: int
    period_ms: int
    key: Expression | None
    burst: int

    def gate(self, function_id: str, event: dict[str, Any]) -> Gate:
        key = gate_key("throttle", function_id, key_value(self.key, event))
        return Gate(key, self.limit, self.period_ms, self.burst)


@dataclasses.dataclass(frozen=True)
class Gate:
    key: str
    limit: int
    period_ms: int
    burst: int
    reason: str = THROTTLED
    reads_holders: bool = False
    may_cancel: bool = False

    def decide(self, state: gates.GateState) -> gates.GateVerdict:
        now = state.now * self.limit
        tat = gcra.arrival(state.row, now, self.limit)
        start = max(now, tat - (self.burst - 1) * self.period_ms)
        start_ms = -(-start // self.limit)
        return gates.GateVerdict(
            admit=True,
            row=gcra.row(tat + self.period_ms, self.limit),
            start_at=start_ms if start_ms > state.now else None,
        )


def parse(config: dict[str, Any] | None) -> Spec | None:
    if config is None:
        return None
    return Spec(
        int(config["limit"]),
        int(config["period_ms"]),
        compile_key(config.get("key")),
        int(config.get("burst", 1)),
    )
