"""The throttle rule's decisions: each run's start time on the GCRA schedule."""

from __future__ import annotations

from tideflow.scheduler.flow import throttle
from tideflow.store import gates


def starts(gate: throttle.Gate, arrivals: list[int]) -> list[int]:
    """When runs arriving at these times (ms) may start, deciding each from the last state."""
    row: gates.GateRow | None = None
    found = []
    for now in arrivals:
        verdict = gate.decide(gates.GateState(now, row))
        assert verdict.admit
        row = verdict.row
        found.append(now if verdict.start_at is None else verdict.start_at)
    return found


def test_a_burst_starts_at_once_then_one_per_interval() -> None:
    gate = throttle.Gate("k", limit=2, period_ms=1000, burst=3)
    # Two a second: one every 500 ms once the three of the burst have started.
    assert starts(gate, [0] * 6) == [0, 0, 0, 500, 1000, 1500]


def test_capacity_comes_back_after_a_quiet_spell() -> None:
    gate = throttle.Gate("k", limit=1, period_ms=1000, burst=2)
    assert starts(gate, [0, 0, 0, 10_000, 10_000, 10_000]) == [0, 0, 1000, 10_000, 10_000, 11_000]


def test_limits_that_do_not_divide_the_period_keep_the_count_exact() -> None:
    gate = throttle.Gate("k", limit=3, period_ms=1000, burst=1)
    assert starts(gate, [0] * 4) == [0, 334, 667, 1000]
