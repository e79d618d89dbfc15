"""The gates a would-be run passes before it starts, in the order of DESIGN.md's flow control:
rate limit, idempotency (both drop the event), singleton (skip or cancel), throttle (delay). Each is decided by
its rule's module in the store transaction that would create the run."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tideflow.scheduler._registry import FunctionSpec
    from tideflow.store import gates


def for_run(spec: FunctionSpec, event: dict[str, Any]) -> tuple[gates.Gate, ...]:
    """The gates of `spec`'s run for `event`; none for a function that sets no such option."""
    return before_hold(spec, event) + at_start(spec, event)


def before_hold(spec: FunctionSpec, event: dict[str, Any]) -> tuple[gates.Gate, ...]:
    """The gates an event passes before a run exists, or before a debounce or a batch holds
    it: those that drop it (rate limit, idempotency)."""
    found: list[gates.Gate] = []
    if spec.rate_limit is not None:
        found.append(spec.rate_limit.gate(spec.function_id, event))
    if spec.idempotency is not None:
        found.append(spec.idempotency.gate(spec.function_id, event))
    return tuple(found)


def at_start(spec: FunctionSpec, event: dict[str, Any]) -> tuple[gates.Gate, ...]:
    """The gates a run passes as it starts, a held run too (from the event it is keyed by):
    singleton (skip or cancel), throttle (delay)."""
    found: list[gates.Gate] = []
    if spec.singleton is not None:
        found.append(spec.singleton.gate(spec.function_id, event))
    if spec.throttle is not None:
        found.append(spec.throttle.gate(spec.function_id, event))
    return tuple(found)


def gate_key(rule: str, function_id: str, value: str) -> str:
    """The name of a gate's state row: per rule, function and key value (hashed: a value may
    be any size, an indexed text column may not)."""
    digest = hashlib.sha1(value.encode()).hexdigest()
    return f"{rule}\x1f{function_id}\x1f{digest}"
