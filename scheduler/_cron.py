from __future__ import annotations

import datetime
import zoneinfo

import croniter
from tideflow._core.cron import parse_cron
from tideflow._core.ids import new_id
from tideflow.store import models as m


def next_tick_ms(cron: str, after_ms: int) -> int:
    tz, expression = parse_cron(cron)
    start = datetime.datetime.fromtimestamp(after_ms / 1000, tz=zoneinfo.ZoneInfo(tz))
    following: datetime.datetime = croniter.croniter(expression, start).get_next(datetime.datetime)
    return int(following.timestamp() * 1000)


def cron_timer(function_id: str, cron: str, *, after_ms: int) -> m.TimerRecord:
    # Keyed by (function, expression): replicas adding the same tick add it once.
    return m.TimerRecord(
        new_id(after_ms), m.TIMER_CRON, function_id, cron, next_tick_ms(cron, after_ms)
    )
