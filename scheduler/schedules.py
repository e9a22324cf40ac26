"""Fire schedules: APScheduler triggers whose fire instants are the identity of a tick.

Every replica must compute the very same instants whatever its start time, so:

* :class:`EpochInterval` fires at exact multiples of the interval since the Unix epoch, in
  integer microseconds (APScheduler's ``IntervalTrigger`` counts in float seconds from its
  start date, which differs between replicas and accumulates rounding).
* :class:`WallCron` evaluates a 5-field cron expression on the local wall clock of a time
  zone and maps each matching wall time to exactly one UTC instant. APScheduler 3.11's own
  ``CronTrigger`` steps backwards across a daylight-saving fall-back (02:30+02:00, then
  02:00+01:00, then 02:30+02:00 again), which would replay or stall ticks.

Daylight saving, for cron jobs in a zone that has it:

* a local time that occurs twice (fall-back) fires once, at its first occurrence;
* a local time that does not exist (spring-forward) fires once, at the instant the clock
  would have shown it in the old offset (02:30 in a skipped 02:00-03:00 hour fires at 03:30
  new time); if that instant is also a fire of its own, the two are one tick.

Use ``timezone="UTC"`` (the default) for evenly spaced instants.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
_MICRO = timedelta(microseconds=1)
# A DST fall-back repeats at most a few hours of wall time; this bounds the search for the
# next wall time whose first occurrence lies after the previous fire (one step per second).
_MAX_SKIPS = 100_000
# Wider than any daylight-saving shift in the tz database (at most 2 h).
_DST_REACH = timedelta(hours=3)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class EpochInterval(BaseTrigger):  # type: ignore[misc]
    """Fires every ``interval``, at instants that are exact multiples of it since the epoch.

    Args:
        interval: positive, a whole number of microseconds.
    """

    def __init__(self, interval: timedelta) -> None:
        step = _micros(_EPOCH + interval)
        if step <= 0:
            raise ValueError("interval must be positive")
        self.step_us = step

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # Strictly after the previous fire; at or after now when there is none.
        after = _micros(previous_fire_time) + 1 if previous_fire_time is not None else _micros(now)
        ticks = -(-after // self.step_us)  # ceil division on integers: exact
        return _EPOCH + timedelta(microseconds=ticks * self.step_us)

    def __str__(self) -> str:
        return f"every {describe_interval(timedelta(microseconds=self.step_us))}"

    def __getstate__(self) -> dict[str, Any]:
        return {"step_us": self.step_us}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.step_us = state["step_us"]


class WallCron(BaseTrigger):  # type: ignore[misc]
    """A 5-field cron expression on the wall clock of ``tz`` (see the module notes on DST).

    Raises:
        ValueError: the expression is malformed (APScheduler's message).
    """

    def __init__(self, expression: str, tz: tzinfo) -> None:
        self.expression = expression
        self.tz = tz
        # Evaluated on naive wall time dressed as UTC, a zone without transitions.
        self._wall = CronTrigger.from_crontab(expression, timezone=UTC)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        after = previous_fire_time if previous_fire_time is not None else now - _MICRO
        if self.tz.utcoffset(after - _DST_REACH) == self.tz.utcoffset(after + _DST_REACH):
            # No transition nearby: wall order is instant order, the first match wins.
            return self._first_after(after, after)
        # Near a transition wall order is not instant order (a skipped 02:30 maps before a
        # real 03:00 would): take the smallest instant among matches around ``after``.
        best: datetime | None = None
        search = self._wall_of(after - _DST_REACH)
        horizon = self._wall_of(after + _DST_REACH)
        for _ in range(_MAX_SKIPS):
            wall = self._wall.get_next_fire_time(None, search)
            if wall is None or wall > horizon:
                break
            instant = self._instant(wall)
            if instant > after and (best is None or instant < best):
                best = instant
            search = wall + _ONE_SECOND
        return best if best is not None else self._first_after(after + _DST_REACH, after)

    def _first_after(self, start: datetime, after: datetime) -> datetime | None:
        search = self._wall_of(start)
        for _ in range(_MAX_SKIPS):
            wall = self._wall.get_next_fire_time(None, search)
            if wall is None:
                return None
            instant = self._instant(wall)
            if instant > after:
                return instant
            search = wall + _ONE_SECOND
        return None

    def _wall_of(self, moment: datetime) -> datetime:
        return moment.astimezone(self.tz).replace(tzinfo=UTC)

    def _instant(self, wall: datetime) -> datetime:
        # fold=0: first occurrence of a repeated time, old offset for a skipped one.
        return wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)

    def __str__(self) -> str:
        return f"cron {self.expression!r} ({self.tz})"


class Ahead(BaseTrigger):  # type: ignore[misc]
    """``trigger`` shifted ``lead`` earlier, so the runner can claim a fire before it is due.

    The fire instants stay those of ``trigger``; the runner adds ``lead`` back.
    """

    def __init__(self, trigger: BaseTrigger, lead: timedelta) -> None:
        self.trigger = trigger
        self.lead = lead

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        previous = previous_fire_time + self.lead if previous_fire_time is not None else None
        fire = self.trigger.get_next_fire_time(previous, now + self.lead)
        return fire - self.lead if fire is not None else None

    def __str__(self) -> str:
        return f"{self.trigger} (claimed {self.lead.total_seconds() * 1000:g} ms ahead)"


def describe_interval(interval: timedelta) -> str:
    """A compact form of ``interval``: ``1h30m``, ``45s``, ``250ms``."""
    micros = _micros(_EPOCH + interval)
    parts: list[str] = []
    for unit, size in (("d", 86_400_000_000), ("h", 3_600_000_000), ("m", 60_000_000)):
        count, micros = divmod(micros, size)
        if count:
            parts.append(f"{count}{unit}")
    seconds, micros = divmod(micros, 1_000_000)
    if seconds:
        parts.append(f"{seconds}s")
    if micros:
        parts.append(f"{micros // 1000}ms" if micros % 1000 == 0 else f"{micros}us")
    return "".join(parts) or "0s"


def fires_between(trigger: BaseTrigger, start: datetime, end: datetime) -> list[datetime]:
    """Every fire instant of ``trigger`` in ``[start, end)``, in order."""
    out: list[datetime] = []
    fire = trigger.get_next_fire_time(None, start)
    while fire is not None and fire < end:
        out.append(fire.astimezone(UTC))
        fire = trigger.get_next_fire_time(fire, fire)
    return out
