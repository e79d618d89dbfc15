"""Rate limit: at most `limit` runs per `period` per key; the events beyond start no run.

GCRA, as Inngest: each run started pushes the key's theoretical arrival time (TAT) one
emission interval (`period / limit`) ahead; a run may start while the TAT stays within one
`period` of now. So a burst starts exactly `limit` runs, and capacity comes back one run per
`period / limit`, all of it once a `period` has passed with no run. Times are kept in units of
1/`limit` ms, so that the interval is a whole number and the count is exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression
from tideflow.store import gates

from . import gcra
from .keys import compile_key, key_value
from .run_gates import gate_key


@dataclasses.dataclass(frozen=True)
class Spec:
    limit: int
    period_ms: int
    key: Expression | None

    def gate(self, function_id: str, event: dict[str, Any]) -> Gate:
        key = gate_key("rate_limit", function_id, key_value(self.key, event))
        return Gate(key, self.limit, self.period_ms)


@dataclasses.dataclass(frozen=True)
class Gate:
    key: str
    limit: int
    period_ms: int
    reason: str = gates.RATE_LIMITED
    reads_holders: bool = False
    may_cancel: bool = False

    def decide(self, state: gates.GateState) -> gates.GateVerdict:
        now = state.now * self.limit
        new_tat = gcra.arrival(state.row, now, self.limit) + self.period_ms
        if new_tat - now > self.period_ms * self.limit:
            return gates.GateVerdict(admit=False)
        return gates.GateVerdict(admit=True, row=gcra.row(new_tat, self.limit))


def parse(config: dict[str, Any] | None) -> Spec | None:
    if config is None:
        return None
    return Spec(int(config["limit"]), int(config["period_ms"]), compile_key(config.get("key")))
