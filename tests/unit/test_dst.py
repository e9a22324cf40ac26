"""Cron jobs at daylight-saving changes follow cron(8) (Vixie/ISC cron, cronie).

A fixed-time job (one number in both the minute and the hour field) fires once a day: a
repeated wall time at its first occurrence, a skipped one right after the change. A job
with a wildcard in the minute or hour field fires whenever the wall clock matches: in
both halves of a repeated hour, never in a skipped one.

Each night below runs from local 00:00 to 04:00 on the day of the change; expected fires
are written as local wall time with the UTC offset in force, so each is one UTC instant.
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scheduler.jobs.schedules import WallCron, fires_between
from scheduler.jobs.spec import build_spec
from tests.harness.catch_up import queued_by_catch_up

EVERY_30 = "*/30 * * * *"
HOURLY = "0 * * * *"
QUARTERS_1_TO_3 = "*/15 1-3 * * *"
AT_0130 = "30 1 * * *"
AT_0230 = "30 2 * * *"
AT_0200 = "0 2 * * *"
AT_0145 = "45 1 * * *"

# (zone, day of the change) -> expression -> local fires "HH:MM<offset>" on that day.
NIGHTS: dict[tuple[str, str], dict[str, str]] = {
    # Spring: 02:00 EST -> 03:00 EDT, 02:00-02:59 does not exist.
    ("America/New_York", "2026-03-08"): {
        EVERY_30: "00:00-05 00:30-05 01:00-05 01:30-05 03:00-04 03:30-04",
        HOURLY: "00:00-05 01:00-05 03:00-04",
        QUARTERS_1_TO_3: "01:00-05 01:15-05 01:30-05 01:45-05 03:00-04 03:15-04 03:30-04 03:45-04",
        AT_0130: "01:30-05",
        AT_0230: "03:00-04",
        AT_0200: "03:00-04",
        AT_0145: "01:45-05",
    },
    # Fall: 02:00 EDT -> 01:00 EST, 01:00-01:59 happens twice.
    ("America/New_York", "2026-11-01"): {
        EVERY_30: "00:00-04 00:30-04 01:00-04 01:30-04 01:00-05 01:30-05 02:00-05 02:30-05"
        " 03:00-05 03:30-05",
        HOURLY: "00:00-04 01:00-04 01:00-05 02:00-05 03:00-05",
        QUARTERS_1_TO_3: "01:00-04 01:15-04 01:30-04 01:45-04 01:00-05 01:15-05 01:30-05"
        " 01:45-05 02:00-05 02:15-05 02:30-05 02:45-05 03:00-05 03:15-05 03:30-05 03:45-05",
        AT_0130: "01:30-04",
        AT_0230: "02:30-05",
        AT_0200: "02:00-05",
        AT_0145: "01:45-04",
    },
    # Spring: 02:00 CET -> 03:00 CEST.
    ("Europe/Berlin", "2026-03-29"): {
        EVERY_30: "00:00+01 00:30+01 01:00+01 01:30+01 03:00+02 03:30+02",
        HOURLY: "00:00+01 01:00+01 03:00+02",
        QUARTERS_1_TO_3: "01:00+01 01:15+01 01:30+01 01:45+01 03:00+02 03:15+02 03:30+02 03:45+02",
        AT_0130: "01:30+01",
        AT_0230: "03:00+02",
        AT_0200: "03:00+02",
        AT_0145: "01:45+01",
    },
    # Fall: 03:00 CEST -> 02:00 CET, 02:00-02:59 happens twice.
    ("Europe/Berlin", "2026-10-25"): {
        EVERY_30: "00:00+02 00:30+02 01:00+02 01:30+02 02:00+02 02:30+02 02:00+01 02:30+01"
        " 03:00+01 03:30+01",
        HOURLY: "00:00+02 01:00+02 02:00+02 02:00+01 03:00+01",
        QUARTERS_1_TO_3: "01:00+02 01:15+02 01:30+02 01:45+02 02:00+02 02:15+02 02:30+02"
        " 02:45+02 02:00+01 02:15+01 02:30+01 02:45+01 03:00+01 03:15+01 03:30+01 03:45+01",
        AT_0130: "01:30+02",
        AT_0230: "02:30+02",
        AT_0200: "02:00+02",
        AT_0145: "01:45+02",
    },
    # Fall by 30 minutes: 02:00 +11 -> 01:30 +10:30, 01:30-01:59 happens twice.
    ("Australia/Lord_Howe", "2026-04-05"): {
        EVERY_30: "00:00+11 00:30+11 01:00+11 01:30+11 01:30+10:30 02:00+10:30 02:30+10:30"
        " 03:00+10:30 03:30+10:30",
        HOURLY: "00:00+11 01:00+11 02:00+10:30 03:00+10:30",
        QUARTERS_1_TO_3: "01:00+11 01:15+11 01:30+11 01:45+11 01:30+10:30 01:45+10:30"
        " 02:00+10:30 02:15+10:30 02:30+10:30 02:45+10:30 03:00+10:30 03:15+10:30"
        " 03:30+10:30 03:45+10:30",
        AT_0130: "01:30+11",
        AT_0230: "02:30+10:30",
        AT_0200: "02:00+10:30",
        AT_0145: "01:45+11",
    },
    # Spring by 30 minutes: 02:00 +10:30 -> 02:30 +11, 02:00-02:29 does not exist.
    ("Australia/Lord_Howe", "2026-10-04"): {
        EVERY_30: "00:00+10:30 00:30+10:30 01:00+10:30 01:30+10:30 02:30+11 03:00+11 03:30+11",
        HOURLY: "00:00+10:30 01:00+10:30 03:00+11",
        QUARTERS_1_TO_3: "01:00+10:30 01:15+10:30 01:30+10:30 01:45+10:30 02:30+11 02:45+11"
        " 03:00+11 03:15+11 03:30+11 03:45+11",
        AT_0130: "01:30+10:30",
        AT_0230: "02:30+11",
        AT_0200: "02:30+11",  # skipped: runs at the change, the same instant as 02:30
        AT_0145: "01:45+10:30",
    },
    # Southern fall: 03:00 AEDT -> 02:00 AEST, 02:00-02:59 happens twice.
    ("Australia/Sydney", "2026-04-05"): {
        EVERY_30: "00:00+11 00:30+11 01:00+11 01:30+11 02:00+11 02:30+11 02:00+10 02:30+10"
        " 03:00+10 03:30+10",
        HOURLY: "00:00+11 01:00+11 02:00+11 02:00+10 03:00+10",
        QUARTERS_1_TO_3: "01:00+11 01:15+11 01:30+11 01:45+11 02:00+11 02:15+11 02:30+11"
        " 02:45+11 02:00+10 02:15+10 02:30+10 02:45+10 03:00+10 03:15+10 03:30+10 03:45+10",
        AT_0130: "01:30+11",
        AT_0230: "02:30+11",
        AT_0200: "02:00+11",
        AT_0145: "01:45+11",
    },
    # Southern spring: 02:00 AEST -> 03:00 AEDT.
    ("Australia/Sydney", "2026-10-04"): {
        EVERY_30: "00:00+10 00:30+10 01:00+10 01:30+10 03:00+11 03:30+11",
        HOURLY: "00:00+10 01:00+10 03:00+11",
        QUARTERS_1_TO_3: "01:00+10 01:15+10 01:30+10 01:45+10 03:00+11 03:15+11 03:30+11 03:45+11",
        AT_0130: "01:30+10",
        AT_0230: "03:00+11",
        AT_0200: "03:00+11",
        AT_0145: "01:45+10",
    },
}

CASES = [
    pytest.param(zone, day, expression, expected, id=f"{zone}-{day}-{expression}")
    for (zone, day), table in NIGHTS.items()
    for expression, expected in table.items()
]


def _noop(ctx: object) -> None:
    """A job that does nothing."""


def instants(day: str, local: str) -> list[datetime]:
    """``"01:30-04 01:00-05"`` on ``day`` as UTC instants."""
    return [datetime.fromisoformat(f"{day}T{token}").astimezone(UTC) for token in local.split()]


def night(zone: str, day: str) -> tuple[datetime, datetime]:
    """Local 00:00 to 04:00 on ``day`` in ``zone``, as UTC instants."""
    tz = ZoneInfo(zone)
    start = datetime.fromisoformat(f"{day}T00:00").replace(tzinfo=tz)
    return start.astimezone(UTC), start.replace(hour=4).astimezone(UTC)


def stepped(trigger: WallCron, start: datetime, end: datetime) -> list[datetime]:
    """Fires in ``[start, end)`` as the fire loop asks for them
    (:mod:`scheduler.firing.fireloop`): the first from ``start``, each next one from the
    previous instant."""
    fires: list[datetime] = []
    run = trigger.get_next_fire_time(None, start)
    while run is not None and run < end:
        fires.append(run.astimezone(UTC))
        run = trigger.get_next_fire_time(run, run)
    return fires


@pytest.mark.parametrize(("zone", "day", "expression", "expected"), CASES)
def test_transition_night_fires_at_the_cron8_instants(
    zone: str, day: str, expression: str, expected: str
) -> None:
    """Over a change night the fire loop fires at exactly the cron(8) instants, in order."""
    start, end = night(zone, day)
    fires = stepped(WallCron(expression, ZoneInfo(zone)), start, end)
    assert fires == instants(day, expected)
    assert len(set(fires)) == len(fires)
    assert all(a < b for a, b in pairwise(fires))


@pytest.mark.parametrize(("zone", "day", "expression", "expected"), CASES)
def test_catch_up_plans_the_fires_the_fire_loop_runs(
    zone: str, day: str, expression: str, expected: str
) -> None:
    """fires_between (catch-up's planner) over a change night equals the fire loop's fires."""
    start, end = night(zone, day)
    trigger = WallCron(expression, ZoneInfo(zone))
    assert fires_between(trigger, start, end) == stepped(trigger, start, end)


@pytest.mark.parametrize(
    ("expression", "fixed_time"),
    [
        (AT_0130, True),
        ("0 2 * * 1-5", True),
        ("05 07 1 * *", True),
        (EVERY_30, False),
        (HOURLY, False),
        ("15 */2 * * *", False),
        ("0,30 1 * * *", False),
        ("0 1-3 * * *", False),
        ("5-5 1 * * *", False),
        ("30 */1 * * *", False),
    ],
)
def test_fixed_time_means_one_number_in_minute_and_hour(expression: str, fixed_time: bool) -> None:
    """Only a single number in both the minute and the hour field makes a job fixed-time."""
    assert WallCron(expression, UTC).fixed_time is fixed_time


def test_every_cron_job_gets_the_dst_trigger() -> None:
    """build_spec (the decorator's path) gives every cron job a WallCron in its zone."""
    spec = build_spec(_noop, cron=EVERY_30, timezone="America/New_York", name="dst")
    assert isinstance(spec.trigger, WallCron)
    assert spec.trigger.tz == ZoneInfo("America/New_York")
    start, end = night("America/New_York", "2026-11-01")
    assert fires_between(spec.trigger, start, end) == instants(
        "2026-11-01", NIGHTS[("America/New_York", "2026-11-01")][EVERY_30]
    )


@pytest.mark.parametrize(
    ("expression", "ran", "expected"),
    [
        (EVERY_30, "00:30-04", "01:00-04 01:30-04 01:00-05 01:30-05 02:00-05"),
        (AT_0130, "01:30-04", ""),
    ],
)
def test_catch_up_over_the_fall_back_hour(
    tmp_path: Path, expression: str, ran: str, expected: str
) -> None:
    """A leader taking over at 02:10 EST replays both halves for */30, not 01:30 EST for 30 1."""
    spec = build_spec(
        _noop,
        cron=expression,
        timezone="America/New_York",
        name="dst",
        catch_up="all",
        misfire_grace=3 * 3600.0,
    )
    now = instants("2026-11-01", "02:10-05")[0]
    queued = queued_by_catch_up(tmp_path, spec, instants("2026-11-01", ran), now)
    assert queued == instants("2026-11-01", expected)


@pytest.mark.parametrize(
    ("expression", "start", "end", "expected"),
    [
        # Fall: 2026-04-05 00:00 -03 -> 2026-04-04 23:00 -04, Saturday 23:00-23:59 twice.
        (
            EVERY_30,
            "2026-04-04T22:00-03",
            "2026-04-05T01:00-04",
            "2026-04-04T22:00-03 2026-04-04T22:30-03 2026-04-04T23:00-03 2026-04-04T23:30-03"
            " 2026-04-04T23:00-04 2026-04-04T23:30-04 2026-04-05T00:00-04 2026-04-05T00:30-04",
        ),
        ("30 23 * * *", "2026-04-04T22:00-03", "2026-04-05T01:00-04", "2026-04-04T23:30-03"),
        ("0 0 * * *", "2026-04-04T22:00-03", "2026-04-05T01:00-04", "2026-04-05T00:00-04"),
        # Spring: 2026-09-06 00:00 -04 -> 01:00 -03, Sunday 00:00-00:59 does not exist.
        (
            EVERY_30,
            "2026-09-05T22:00-04",
            "2026-09-06T02:00-03",
            "2026-09-05T22:00-04 2026-09-05T22:30-04 2026-09-05T23:00-04 2026-09-05T23:30-04"
            " 2026-09-06T01:00-03 2026-09-06T01:30-03",
        ),
        ("0 0 * * *", "2026-09-05T22:00-04", "2026-09-06T02:00-03", "2026-09-06T01:00-03"),
        ("30 0 * * sun", "2026-09-05T22:00-04", "2026-09-06T02:00-03", "2026-09-06T01:00-03"),
        ("30 0 * * sat", "2026-09-05T22:00-04", "2026-09-06T02:00-03", ""),
    ],
)
def test_santiago_changes_at_midnight_keep_the_day(
    expression: str, start: str, end: str, expected: str
) -> None:
    """America/Santiago changes at midnight: the skipped 00:xx belongs to Sunday, not Saturday."""
    trigger = WallCron(expression, ZoneInfo("America/Santiago"))
    begin, finish = datetime.fromisoformat(start), datetime.fromisoformat(end)
    fires = stepped(trigger, begin, finish)
    assert fires == [datetime.fromisoformat(s).astimezone(UTC) for s in expected.split()]
    assert fires_between(trigger, begin, finish) == fires


@pytest.mark.parametrize(
    ("zone", "expression", "count"),
    [
        ("America/New_York", EVERY_30, 365 * 48),  # spring -2, fall +2
        ("America/New_York", HOURLY, 365 * 24),  # spring -1, fall +1
        ("America/New_York", AT_0230, 365),
        ("Europe/Berlin", QUARTERS_1_TO_3, 365 * 12),  # spring -4, fall +4
        ("Australia/Lord_Howe", EVERY_30, 365 * 48),  # spring -1, fall +1
        ("Australia/Lord_Howe", HOURLY, 365 * 24 - 1),  # spring loses 02:00; 01:30-02:00 has no :00
        ("Australia/Lord_Howe", AT_0200, 365),
        ("America/Santiago", "0 0 * * *", 365),
    ],
)
def test_a_year_of_fires_strictly_increases(zone: str, expression: str, count: int) -> None:
    """Stepping through 2026 never repeats or goes back, and counts cron(8)'s runs."""
    fires = fires_between(
        WallCron(expression, ZoneInfo(zone)),
        datetime(2026, 1, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )
    assert all(a < b for a, b in pairwise(fires))
    assert len(fires) == count
