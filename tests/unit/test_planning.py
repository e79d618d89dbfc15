from __future__ import annotations

import datetime
import random

from tideflow.scheduler import _backoff as backoff
from tideflow.scheduler._cron import next_tick_ms
from tideflow.scheduler._planning import plan_timer
from tideflow.scheduler._registry import Registry, _spec
from tideflow.store import models as m


def ms(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1000)


def test_retry_delays_double_from_the_base_with_bounded_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff.retry_delay_ms(attempt, 1000, rng=rng) for attempt in range(5)]
    for attempt, delay in enumerate(delays):
        assert 0.8 * 1000 * 2**attempt <= delay <= 1.2 * 1000 * 2**attempt
    assert backoff.retry_delay_ms(40, 15_000, rng=rng) <= 1.2 * backoff.MAX_DELAY_MS


def test_cron_ticks_follow_the_expression_in_its_time_zone() -> None:
    after = ms(datetime.datetime(2026, 3, 2, 8, 30, tzinfo=datetime.UTC))
    assert next_tick_ms("0 9 * * *", after) == ms(
        datetime.datetime(2026, 3, 2, 9, 0, tzinfo=datetime.UTC)
    )
    paris = next_tick_ms("TZ=Europe/Paris 0 9 * * *", after)
    assert paris == ms(datetime.datetime(2026, 3, 3, 8, 0, tzinfo=datetime.UTC))


def test_a_cron_timer_emits_its_tick_event_and_the_next_tick() -> None:
    registry = Registry()
    spec = _spec(
        {
            "function_id": "app-nightly",
            "app_id": "app",
            "retries": 1,
            "triggers": [{"cron": "*/5 * * * *"}],
        }
    )
    registry._functions = {spec.function_id: spec}
    due = ms(datetime.datetime(2026, 1, 1, 0, 5, tzinfo=datetime.UTC))
    timer = m.TimerRecord("t1", m.TIMER_CRON, "app-nightly", "*/5 * * * *", due)

    changes = plan_timer(timer, registry, due + 10)

    events, next_timer = changes
    assert isinstance(events, m.AddEvents)
    assert isinstance(next_timer, m.AddTimer)
    (event,) = events.events
    assert (event.name, event.data, event.ts) == (
        "tideflow/scheduled.timer",
        {"cron": "*/5 * * * *"},
        due,
    )
    assert event.target == {"function_id": "app-nightly", "parent": None}
    assert next_timer.timer.due_at == due + 5 * 60_000
    assert plan_timer(timer, Registry(), due) == []
