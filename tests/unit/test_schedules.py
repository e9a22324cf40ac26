"""Fire instants: identical on every replica, exact, and sane across daylight saving."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.jobs.schedules import EpochInterval, WallCron, describe_interval, fires_between

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def hhmm(fires: list[datetime]) -> list[str]:
    return [f.strftime("%H:%M") for f in fires]


def test_interval_ticks_are_epoch_multiples_whatever_the_start() -> None:
    """Two replicas started at different moments compute the same 7 s ticks."""
    trigger = EpochInterval(timedelta(seconds=7))
    a = fires_between(
        trigger, utc(2026, 1, 1, 0, 0, 0) + timedelta(microseconds=3), utc(2026, 1, 1, 0, 1)
    )
    b = fires_between(trigger, utc(2026, 1, 1, 0, 0, 13), utc(2026, 1, 1, 0, 1))
    assert all(int(f.timestamp()) % 7 == 0 and f.microsecond == 0 for f in a)
    assert b == [f for f in a if f >= utc(2026, 1, 1, 0, 0, 13)]


def test_interval_next_after_previous_is_strict_and_exact() -> None:
    """The fire after a fire is exactly one interval later, even for 250 ms over a year."""
    trigger = EpochInterval(timedelta(milliseconds=250))
    fire = trigger.get_next_fire_time(None, utc(2026, 6, 1))
    assert fire == utc(2026, 6, 1)
    nxt = trigger.get_next_fire_time(fire, fire)
    assert nxt == fire + timedelta(milliseconds=250)
    far = trigger.get_next_fire_time(None, utc(2027, 6, 1) - timedelta(microseconds=1))
    assert far == utc(2027, 6, 1)


def test_cron_in_utc_matches_expression() -> None:
    """A UTC cron fires at the listed minutes."""
    fires = fires_between(
        WallCron("*/20 * * * *", UTC), utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 1, 0)
    )
    assert hhmm(fires) == ["00:00", "00:20", "00:40"]


def test_cron_fall_back_repeated_time_fires_once_at_first_occurrence() -> None:
    """Berlin 2026-10-25 repeats 02:00-03:00: fixed 02:30 fires once (00:30 UTC); an hourly
    job fires in both halves (02:00 CEST and 02:00 CET), as cron(8) does."""
    fires = fires_between(
        WallCron("30 2 * * *", BERLIN), utc(2026, 10, 24, 23), utc(2026, 10, 25, 3)
    )
    assert hhmm(fires) == ["00:30"]
    hourly = fires_between(
        WallCron("0 * * * *", BERLIN), utc(2026, 10, 24, 23), utc(2026, 10, 25, 3)
    )
    assert hhmm(hourly) == ["23:00", "00:00", "01:00", "02:00"]
    assert hourly == sorted(set(hourly))


def test_cron_spring_forward_skipped_time_fires_once_at_the_change() -> None:
    """Berlin 2026-03-29 skips 02:00-03:00: 02:30 fires at 03:00 CEST (01:00 UTC), once."""
    fires = fires_between(WallCron("30 2 * * *", BERLIN), utc(2026, 3, 28, 23), utc(2026, 3, 29, 3))
    assert hhmm(fires) == ["01:00"]
    every20 = fires_between(
        WallCron("*/20 * * * *", BERLIN), utc(2026, 3, 29, 0), utc(2026, 3, 29, 2)
    )
    assert hhmm(every20) == ["00:00", "00:20", "00:40", "01:00", "01:20", "01:40"]


def test_cron_instants_strictly_increase_through_a_whole_year() -> None:
    """Stepping fire to fire never repeats or goes back (the APScheduler 3 CronTrigger bug)."""
    trigger = WallCron("*/30 1-3 * * *", BERLIN)
    fire = trigger.get_next_fire_time(None, utc(2026, 1, 1))
    count = 0
    while fire is not None and fire < utc(2027, 1, 1):
        nxt = trigger.get_next_fire_time(fire, fire)
        assert nxt is not None and nxt > fire
        fire, count = nxt, count + 1
    # 6 half-hours a day: spring skips 02:00 and 02:30, autumn runs them twice.
    assert count == 365 * 6


def test_impossible_cron_has_no_next_fire() -> None:
    """'0 0 31 2 *' parses but never fires."""
    assert WallCron("0 0 31 2 *", UTC).get_next_fire_time(None, utc(2026, 1, 1)) is None


@pytest.mark.parametrize(
    ("interval", "text"),
    [
        (timedelta(seconds=30), "30s"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(milliseconds=250), "250ms"),
        (timedelta(days=1), "1d"),
    ],
)
def test_describe_interval(interval: timedelta, text: str) -> None:
    """Intervals print compactly."""
    assert describe_interval(interval) == text
