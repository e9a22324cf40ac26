"""Cron expressions read as crontab(5) reads them: weekday numbers, and day-of-month OR
day-of-week (APScheduler 3's ``from_crontab`` differs on both)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.jobs.schedules import WallCron, fires_between

# November 2026: the 1st is a Sunday.
START, END = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 30, 23, 59, tzinfo=UTC)


def _days(expression: str) -> list[int]:
    return [f.day for f in fires_between(WallCron(expression, UTC), START, END)]


@pytest.mark.parametrize(
    ("expression", "days"),
    [
        ("0 9 * * 1", [2, 9, 16, 23, 30]),  # Monday, not Tuesday
        ("0 9 * * 0", [1, 8, 15, 22, 29]),  # 0 is Sunday
        ("0 9 * * 7", [1, 8, 15, 22, 29]),  # so is 7
        ("0 9 * * sun", [1, 8, 15, 22, 29]),
        ("0 9 * * 6-7", [1, 7, 8, 14, 15, 21, 22, 28, 29]),
        ("0 9 * * 1-5", [d for d in range(2, 31) if d % 7 not in (0, 1)]),
        ("0 9 * * */3", [1, 4, 7, 8, 11, 14, 15, 18, 21, 22, 25, 28, 29]),  # sun, wed, sat
        ("0 9 * * 1,3", [2, 4, 9, 11, 16, 18, 23, 25, 30]),
        ("0 9 * * 0-6", list(range(1, 31))),
    ],
)
def test_weekday_numbers_follow_crontab(expression: str, days: list[int]) -> None:
    """Weekday numbers count from Sunday = 0 (and 7), as in crontab(5)."""
    assert _days(expression) == days


def test_restricted_day_of_month_and_week_fire_on_either() -> None:
    """``0 0 13 * 5`` fires on the 13th and on every Friday (crontab's OR), once a day."""
    assert _days("0 0 13 * 5") == [6, 13, 20, 27]  # the 13th is a Friday too: once
    assert _days("0 0 1,15 * mon") == [1, 2, 9, 15, 16, 23, 30]


def test_a_star_in_either_day_field_means_and() -> None:
    """With ``*`` in one day field, the other alone decides (no OR)."""
    assert _days("0 0 * * 1") == [2, 9, 16, 23, 30]
    assert _days("0 0 1 * *") == [1]


@pytest.mark.parametrize("bad", ["0 9 * * 8", "0 9 * * 5-1", "0 9 * * */0", "0 9 * * funday"])
def test_bad_weekday_fields_are_refused(bad: str) -> None:
    """A weekday outside 0-7/sun-sat, a backwards range or a zero step is an error."""
    with pytest.raises(ValueError):
        WallCron(bad, UTC)
