"""The generic cell rate algorithm's clock, shared by rate limit and throttle: a key's
theoretical arrival time (TAT), kept in units of 1/`limit` ms so that the emission interval
(`period / limit`) is the whole number `period`."""

from __future__ import annotations

from tideflow.store import gates


def arrival(row: gates.GateRow | None, now: int, limit: int) -> int:
    """The key's TAT, no earlier than `now` (both in 1/`limit` ms)."""
    if row is None:
        return now
    # A row written under another limit is rescaled to this one's units.
    return max(now, row.value * limit // max(row.scale, 1))


def row(tat: int, limit: int) -> gates.GateRow:
    """The state to store; past its expiry the TAT is behind any `now`, as if absent."""
    return gates.GateRow(tat, limit, -(-tat // limit))
