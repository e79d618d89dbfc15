"""Cancel on event: `cancel=[Cancel(event, if_exp, timeout)]`.

A run listens from its creation (its listeners are registered in the transaction that creates
it) until it ends or `timeout` has passed; an event of the listener's name for which `if_exp`
(over `event`, the run's trigger, and `async`, the incoming event) is true cancels it, whatever
it is doing. Listeners are waits of kind `cancel`, indexed like `wait_for_event`'s waits
(`tideflow._core.matching`), so an event finds the runs it cancels without evaluating every
listener's expression.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import tideflow.scheduler._cancellation as cancellation
from tideflow._core import matching
from tideflow._core.expressions import Expression, compile_expression
from tideflow.store import models as m


@dataclasses.dataclass(frozen=True)
class Listen:
    event: str
    if_exp: Expression | None
    timeout_ms: int | None


Spec = tuple[Listen, ...]


def parse(config: list[dict[str, Any]] | None) -> Spec:
    return tuple(
        Listen(
            event=item["event"],
            if_exp=compile_expression(item["if_exp"]) if item.get("if_exp") else None,
            timeout_ms=item.get("timeout_ms"),
        )
        for item in config or ()
    )


def step_hash(position: int) -> str:
    """A listener's key among its run's waits: never a step's (step hashes are hex)."""
    return f"cancel:{position}"


def listeners(spec: Spec, run_id: str, event: dict[str, Any]) -> tuple[m.Listener, ...]:
    """The listeners of a run triggered by `event`, indexed by their expression's equality."""
    found = []
    for position, listen in enumerate(spec):
        text = listen.if_exp.text if listen.if_exp is not None else None
        index = matching.wait_index(text, event)
        wait = m.WaitRecord(
            run_id,
            step_hash(position),
            m.WAIT_CANCEL,
            event_name=listen.event,
            if_exp=text,
            run_event=event,
            match_path=index[0] if index else None,
            match_key=index[1] if index else None,
        )
        found.append(m.Listener(wait, listen.timeout_ms))
    return tuple(found)


def on_event(
    listener: m.WaitRecord, event: m.EventRecord, payload: dict[str, Any]
) -> list[m.Change]:
    """The changes `event` makes to the run of `listener` (found for it): its cancellation if
    the listener's expression matches, else none."""
    run = listener.run
    if run is None or listener.event_name != event.name:
        return []
    if listener.expires_at is not None and event.received_at >= listener.expires_at:
        return []
    if listener.if_exp is not None and not compile_expression(listener.if_exp).matches(
        {"event": listener.run_event or {}, "async": payload}
    ):
        return []
    return cancellation.cancel(run, cancellation.EVENT, f"by event {event.name}", event.received_at)
