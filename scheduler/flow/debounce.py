"""Debounce: one run per key, `period` after the last event of a burst, with that event;
`timeout` caps the delay from the burst's first event."""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow._core.expressions import Expression
from tideflow.store import models as m

from .keys import compile_key, key_value


@dataclasses.dataclass(frozen=True)
class Spec:
    period_ms: int
    key: Expression | None
    timeout_ms: int | None

    def hold(self, run: m.CreateRun, event: dict[str, Any], start: m.RunStarter) -> m.HoldDebounced:
        """Holds the event of `run` (not created) in its key's burst."""
        return m.HoldDebounced(
            run.function_id, key_value(self.key, event), run.event_id, self, start
        )

    def on_event(self, burst: m.Burst | None, event_id: str, now: int) -> m.Burst:
        """The burst once `event_id` has arrived: it becomes the burst's event and the window
        restarts, up to `timeout` after the burst's first event."""
        if burst is None:
            return m.Burst(event_id, first_at=now, due_at=now + self.period_ms)
        if event_id <= burst.event_id:
            # Ids sort by time: an older event redelivered late neither replaces the newer one
            # nor prolongs the burst.
            return burst
        due_at = now + self.period_ms
        if self.timeout_ms is not None:
            due_at = min(due_at, burst.first_at + self.timeout_ms)
        return m.Burst(event_id, burst.first_at, due_at)


def parse(config: dict[str, Any] | None) -> Spec | None:
    if config is None:
        return None
    timeout = config.get("timeout_ms")
    return Spec(
        int(config["period_ms"]),
        compile_key(config.get("key")),
        None if timeout is None else int(timeout),
    )
