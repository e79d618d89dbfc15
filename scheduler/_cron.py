from __future__ import annotations

import datetime
import zoneinfo

import croniter
from tideflow._core.cron import parse_cron
from tideflow._core.ids import new_id
from tideflow.store import models as m


def next_tick_ms(cron: str, after_ms: int) -> int:
    """The first tick of `cron` after `after_ms`, in its time zone. croniter decides, with one
    correction: when clocks go back, a wall-clock time that happens twice (01:30 on that night)
    is one tick for an expression naming its hour, as cron does; an hourly one (`*` hours)
    ticks in both hours, which are an hour apart."""
    tz, expression = parse_cron(cron)
    zone = zoneinfo.ZoneInfo(tz)
    start = datetime.datetime.fromtimestamp(after_ms / 1000, tz=zone)
    ticks = croniter.croniter(expression, start)
    every_hour = expression.split()[1] == "*"
    while True:
        following: datetime.datetime = ticks.get_next(datetime.datetime)
        moment = datetime.datetime.fromtimestamp(following.timestamp(), tz=zone)
        if every_hour or moment.fold == 0 or not _repeated(moment):
            return int(following.timestamp() * 1000)


def _repeated(moment: datetime.datetime) -> bool:
    """Whether this wall-clock time also happened earlier (the second pass after clocks went
    back)."""
    first = moment.replace(fold=0)
    return first.utcoffset() != moment.utcoffset()


def cron_timer(function_id: str, cron: str, *, after_ms: int) -> m.TimerRecord:
    # Keyed by (function, expression): replicas adding the same tick add it once.
    return m.TimerRecord(
        new_id(after_ms), m.TIMER_CRON, function_id, cron, next_tick_ms(cron, after_ms)
    )
