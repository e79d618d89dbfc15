"""Where debounce and batching enter planning: an event's run is held instead of created, and
a hold's timer starts it."""

from __future__ import annotations

from typing import Any

from tideflow.store import models as m

from ._registry import FunctionSpec


def hold(
    run: m.CreateRun, spec: FunctionSpec, event: dict[str, Any], start: m.RunStarter
) -> m.Change:
    """`run` itself, or the hold that keeps its event until the function's rule starts a run
    with `start`."""
    if spec.debounce is not None:
        return spec.debounce.hold(run, event, start)
    if spec.batch_events is not None:
        return spec.batch_events.hold(run, event, start)
    return run


def start(timer: m.TimerRecord, start: m.RunStarter) -> m.StartHeld:
    """What a hold's timer (its function in `run_id`, its key in `step_hash`) asks."""
    return m.StartHeld(timer.kind, timer.run_id, timer.step_hash, start)
