from __future__ import annotations

import asyncio
import random

import pytest
from tideflow._core.backoff import Backoff


def test_delays_grow_by_the_factor_up_to_the_cap_without_jitter() -> None:
    backoff = Backoff(base_s=0.5, cap_s=5.0, factor=2.0, jitter="none")

    delays = [backoff.next_delay() for _ in range(7)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    assert backoff.attempt == 7


def test_equal_jitter_keeps_at_least_half_of_each_delay() -> None:
    backoff = Backoff(base_s=1.0, cap_s=8.0, jitter="equal", rng=random.Random(7))

    for attempt in range(1, 200):
        ceiling = min(8.0, 2.0 ** (attempt - 1))
        assert ceiling / 2 <= backoff.delay_for(attempt) <= ceiling


def test_full_jitter_spreads_each_delay_from_zero_to_its_ceiling() -> None:
    backoff = Backoff(base_s=1.0, cap_s=4.0, jitter="full", rng=random.Random(3))

    delays = [backoff.delay_for(10) for _ in range(500)]

    assert all(0 <= delay <= 4.0 for delay in delays)
    assert min(delays) < 1.0 < 3.0 < max(delays)


def test_the_same_seed_gives_the_same_delays() -> None:
    def delays(seed: int) -> list[float]:
        backoff = Backoff(base_s=0.1, cap_s=2.0, rng=random.Random(seed))
        return [backoff.next_delay() for _ in range(10)]

    assert delays(42) == delays(42)
    assert delays(42) != delays(43)


def test_reset_after_a_success_starts_again_from_the_base() -> None:
    backoff = Backoff(base_s=0.25, cap_s=10.0, jitter="none")
    for _ in range(5):
        backoff.next_delay()

    backoff.reset()

    assert backoff.attempt == 0
    assert backoff.next_delay() == 0.25
    assert backoff.attempt == 1


def test_a_very_long_outage_stays_at_the_cap() -> None:
    backoff = Backoff(base_s=1.0, cap_s=30.0, factor=10.0, jitter="none")

    assert backoff.delay_for(10**6) == 30.0


def test_warnings_go_to_powers_of_two_then_every_nth_failure() -> None:
    backoff = Backoff(base_s=1.0, cap_s=2.0, warn_every=10)

    warned = [n for n in range(1, 70) if backoff.should_warn(n)]

    assert warned == [1, 2, 4, 8, 10, 16, 20, 30, 32, 40, 50, 60, 64]
    assert not backoff.should_warn(0)


def test_should_warn_defaults_to_the_last_failure_counted() -> None:
    backoff = Backoff(base_s=1.0, cap_s=2.0)

    decisions = []
    for _ in range(9):
        backoff.next_delay()
        decisions.append(backoff.should_warn())

    assert decisions == [True, True, False, True, False, False, False, True, False]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"base_s": 0.0, "cap_s": 1.0}, "0 < base_s <= cap_s"),
        ({"base_s": 2.0, "cap_s": 1.0}, "0 < base_s <= cap_s"),
        ({"base_s": 1.0, "cap_s": 2.0, "factor": 0.5}, "factor must be at least 1"),
        ({"base_s": 1.0, "cap_s": 2.0, "jitter": "half"}, "jitter must be"),
        ({"base_s": 1.0, "cap_s": 2.0, "warn_every": 0}, "warn_every must be positive"),
    ],
)
def test_nonsense_parameters_are_refused(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Backoff(**kwargs)  # type: ignore[arg-type]


async def test_sleep_counts_a_failure_and_waits_its_delay() -> None:
    backoff = Backoff(base_s=0.01, cap_s=0.02, jitter="none")

    slept = await asyncio.wait_for(backoff.sleep(), timeout=10)

    assert slept == 0.01
    assert backoff.attempt == 1
