"""Where debounce and batching enter planning: an event's run is held instead of created, and
a hold's timer starts it."""

from __future__ import annotations

import dataclasses
from typing import Any

from tideflow.store import models as m

from ._registry import FunctionSpec
from .flow import run_gates


def hold(
    run: m.CreateRun, spec: FunctionSpec, event: dict[str, Any], start: m.RunStarter
) -> m.Change:
    """`run` itself, or the hold that keeps its event until the function's rule starts a run
    with `start`."""
    held: m.Change = run
    if spec.debounce is not None:
        held = spec.debounce.hold(run, event, start)
    elif spec.batch_events is not None:
        held = spec.batch_events.hold(run, event, start)
    if isinstance(held, (m.HoldDebounced, m.AddToBatch)):
        # Dropped before it is held (rate limit, idempotency); the run a hold starts passes
        # the gates of a run's start.
        held = dataclasses.replace(held, gates=run_gates.before_hold(spec, event))
    return held


def start(timer: m.TimerRecord, start: m.RunStarter) -> m.StartHeld:
    """What a hold's timer (its function in `run_id`, its key in `step_hash`) asks."""
    return m.StartHeld(timer.kind, timer.run_id, timer.step_hash, start)
