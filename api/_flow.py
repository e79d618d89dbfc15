"""What flow control does to runs and events, as the API shows it: why a run is held now, and
why an event started no run of a function whose trigger names it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from tideflow import errors
from tideflow._core.expressions import compile_expression
from tideflow.store import Store, views
from tideflow.store import models as m

from ._time import iso

logger = logging.getLogger(__name__)
_BURST_LOOKAHEAD = 50
"""Runs of a debounced function read after an event to find its burst's (other keys' runs
may come first)."""

CONCURRENCY, THROTTLE = "concurrency", "throttle"
DEBOUNCED, BATCHED, DUPLICATE, FILTERED = "debounced", "batched", "duplicate", "filtered"
"""Reasons beside the gates' own (rate_limited, idempotent, singleton, from run_refusals)."""


async def run_held(store: Store, run: m.RunRecord) -> dict[str, Any] | None:
    """`{"rule": "concurrency", "since": ...}` while the run's job waits for a slot,
    `{"rule": "throttle", "until": ...}` while its start timer is set, else None."""
    if run.status in m.TERMINAL:
        return None
    hold = await store.run_hold(run.run_id)
    return None if hold is None else _held(hold)


def _held(hold: views.RunHold) -> dict[str, Any]:
    if hold.rule == CONCURRENCY:
        return {"rule": CONCURRENCY, "since": iso(hold.at)}
    return {"rule": hold.rule, "until": iso(hold.at)}


async def not_started(
    store: Store,
    event: m.EventRecord,
    state: views.EventState | None,
    configs: Sequence[dict[str, Any]],
) -> list[dict[str, Any]]:
    """For each function whose trigger names this event and that it started no run of:
    `{"function_id", "reason", "run_id"}`, the reason one of rate_limited, idempotent,
    singleton, debounced, batched (`run_id`: the run it was merged into, None while it is held),
    duplicate or filtered (the trigger's expression did not match). Empty while the event is
    not processed, and for an event addressed to one function (an invocation, a rerun)."""
    if state is None or not state.processed or event.target is not None:
        return []
    started = {run.function_id for run in await store.runs_for_event(event.internal_id)}
    named = [
        config
        for config in configs
        if config["function_id"] not in started and _names(config, event.name)
    ]
    if not named:
        return []
    if state.duplicate:
        return [_fate(config["function_id"], DUPLICATE) for config in named]
    refusals = await store.run_refusals(event.internal_id)
    payload = event.payload()
    holding = [
        config["function_id"]
        for config in named
        if config["function_id"] not in refusals
        and (config.get("debounce") or config.get("batch_events"))
        and _matches(config, event.name, payload)
    ]
    batched = [f for f in holding if not _config(named, f).get("debounce")]
    merged = await store.runs_listing_event(payload["id"], batched, event.received_at)
    for function_id in holding:
        if function_id not in batched:
            run_id = await _burst_run(store, _config(named, function_id), event, payload)
            if run_id is not None:
                merged[function_id] = run_id
    fates = []
    for config in named:
        function_id = config["function_id"]
        if function_id in refusals:
            fates.append(_fate(function_id, refusals[function_id]))
        elif function_id in holding:
            reason = DEBOUNCED if config.get("debounce") else BATCHED
            fates.append(_fate(function_id, reason, merged.get(function_id)))
        elif not _matches(config, event.name, payload):
            fates.append(_fate(function_id, FILTERED))
    return fates


def _config(configs: Sequence[dict[str, Any]], function_id: str) -> dict[str, Any]:
    return next(c for c in configs if c["function_id"] == function_id)


async def _burst_run(
    store: Store, config: dict[str, Any], event: m.EventRecord, payload: dict[str, Any]
) -> str | None:
    """The run a debounced event's burst started: the first of its function and key after it
    (bursts of a key follow one another); None while the burst is held."""
    key = config["debounce"].get("key")
    candidates = await store.first_runs_since(
        config["function_id"], event.received_at, _BURST_LOOKAHEAD
    )
    for run in candidates:
        if run.events and _key(key, run.events[0]) == _key(key, payload):
            return run.run_id
    return None


def _key(expression: str | None, payload: dict[str, Any]) -> Any:
    """A key expression's value over an event (as the rule compares them: equal values, one
    key; a value that does not evaluate is a key of its own)."""
    if not expression:
        return None
    try:
        return compile_expression(expression).evaluate({"event": payload})
    except Exception:  # noqa: BLE001 - as the rule, which files such events under one key
        return "<error>"


def _fate(function_id: str, reason: str, run_id: str | None = None) -> dict[str, Any]:
    return {"function_id": function_id, "reason": reason, "run_id": run_id}


def _triggers(config: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in config.get("triggers", []) if isinstance(t, dict) and "event" in t]


def _names(config: dict[str, Any], name: str) -> bool:
    return any(_names_event(trigger["event"], name) for trigger in _triggers(config))


def _names_event(pattern: str, name: str) -> bool:
    # As the scheduler's registry reads a trigger: a trailing `*` is a prefix.
    return name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern


def _matches(config: dict[str, Any], name: str, payload: dict[str, Any]) -> bool:
    for trigger in _triggers(config):
        if not _names_event(trigger["event"], name):
            continue
        expression = trigger.get("expression")
        if not expression:
            return True
        try:
            if compile_expression(expression).matches({"event": payload}):
                return True
        except errors.ExpressionError:
            logger.debug("%s: bad trigger expression %r", config["function_id"], expression)
    return False
