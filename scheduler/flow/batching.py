"""Batching: up to `max_size` events per run, per key, started when the batch is full or
`timeout` after its first event; events failing `if_exp` start runs of their own."""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression
from tideflow.store import models as m

from .keys import compile_key, key_value


@dataclasses.dataclass(frozen=True)
class Spec:
    max_size: int
    timeout_ms: int
    key: Expression | None
    if_exp: Expression | None

    def hold(
        self, run: m.CreateRun, event: dict[str, Any], start: m.RunStarter
    ) -> m.CreateRun | m.AddToBatch:
        """Adds the event of `run` to its key's batch, or starts `run` alone when `if_exp`
        is false for it (or fails to evaluate: a filter never blocks its event)."""
        if self.if_exp is not None and not self.if_exp.matches({"event": event}):
            return run
        return m.AddToBatch(run.function_id, key_value(self.key, event), run.event_id, self, start)

    def on_event(self, batch: m.OpenBatch | None, event_id: str, now: int) -> m.OpenBatch:
        """The batch with `event_id` added: the first event opens it, due `timeout` later."""
        if batch is None:
            return m.OpenBatch(event_id, size=1, first_at=now, due_at=now + self.timeout_ms)
        return dataclasses.replace(batch, size=batch.size + 1)

    def is_full(self, batch: m.OpenBatch) -> bool:
        return batch.size >= self.max_size


def parse(config: dict[str, Any] | None) -> Spec | None:
    if config is None:
        return None
    return Spec(
        int(config["max_size"]),
        int(config["timeout_ms"]),
        compile_key(config.get("key")),
        compile_key(config.get("if_exp")),
    )
