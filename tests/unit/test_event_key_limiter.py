"""The per event key token bucket, on a clock the test moves."""

from __future__ import annotations

import pytest
from tideflow._settings import Rate
from tideflow.api._limits import EventKeyLimiter, retry_after


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_key_refills_at_its_rate_and_keys_are_independent() -> None:
    clock = Clock()
    limiter = EventKeyLimiter(Rate(10, 1000), clock=clock)

    assert limiter.admit("a", 10) is None
    assert limiter.admit("a", 1) == 0.1
    assert limiter.admit("b", 10) is None
    clock.now += 0.5
    assert limiter.admit("a", 5) is None
    assert limiter.admit("a", 1) is not None


def test_a_send_larger_than_the_bucket_passes_when_full_and_leaves_a_debt() -> None:
    clock = Clock()
    limiter = EventKeyLimiter(Rate(10, 1000), clock=clock)

    assert limiter.admit("a", 30) is None
    wait = limiter.admit("a", 1)
    assert wait is not None
    assert wait == pytest.approx(2.1)  # 20 events of debt plus the one asked for, at 10 a second
    assert retry_after(wait) == "3"
    clock.now += 2.1
    assert limiter.admit("a", 1) is None
