"""Cron ticks across daylight-saving transitions: none doubled, none skipped."""

from __future__ import annotations

import datetime
import zoneinfo

from tideflow.scheduler._cron import next_tick_ms

NEW_YORK = zoneinfo.ZoneInfo("America/New_York")


def ticks(cron: str, start: datetime.datetime, count: int) -> list[str]:
    moment, found = int(start.timestamp() * 1000), []
    for _ in range(count):
        moment = next_tick_ms(cron, moment)
        found.append(datetime.datetime.fromtimestamp(moment / 1000, NEW_YORK).isoformat())
    return found


def test_a_daily_tick_in_the_repeated_hour_happens_once_when_clocks_go_back() -> None:
    start = datetime.datetime(2026, 10, 31, 12, tzinfo=NEW_YORK)
    assert ticks("TZ=America/New_York 30 1 * * *", start, 3) == [
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
        "2026-11-03T01:30:00-05:00",
    ]


def test_an_hourly_tick_happens_in_both_passes_of_the_repeated_hour() -> None:
    start = datetime.datetime(2026, 11, 1, 0, 0, tzinfo=NEW_YORK)
    assert ticks("TZ=America/New_York 30 * * * *", start, 4) == [
        "2026-11-01T00:30:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-01T01:30:00-05:00",
        "2026-11-01T02:30:00-05:00",
    ]


def test_a_daily_tick_in_the_skipped_hour_still_happens_when_clocks_go_forward() -> None:
    start = datetime.datetime(2026, 3, 7, 12, tzinfo=NEW_YORK)
    # 02:30 does not exist on March 8th: croniter's next moment, 03:00, ticks instead.
    assert ticks("TZ=America/New_York 30 2 * * *", start, 2) == [
        "2026-03-08T03:00:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]
