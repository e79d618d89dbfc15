"""Where debounce and batching enter planning: an event's run is held instead of created, and
a hold's timer starts it."""

from __future__ import annotations

from typing import Any

from tideflow.store import models as m

from ._registry import FunctionSpec, Registry


def hold(run: m.CreateRun, spec: FunctionSpec, event: dict[str, Any]) -> m.Change:
    """`run` itself, or the hold that keeps its event until the function's rule starts it."""
    if spec.debounce is not None:
        return spec.debounce.hold(run, event)
    if spec.batch_events is not None:
        return spec.batch_events.hold(run, event)
    return run


def on_timer(timer: m.TimerRecord, registry: Registry) -> list[m.Change]:
    """A hold's timer (its function in `run_id`, its key in `step_hash`) starts its run."""
    spec = registry.get(timer.run_id)
    if spec is None:
        # The function is gone: its held events stay stored, and start nothing.
        return []
    return [m.StartHeld(timer.kind, spec.function_id, spec.app_id, timer.step_hash)]
