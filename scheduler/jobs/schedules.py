"""Fire schedules: APScheduler triggers whose fire instants are the identity of a tick.

Every replica must compute the very same instants whatever its start time, so:

* :class:`EpochInterval` fires at exact multiples of the interval since the Unix epoch, in
  integer microseconds (APScheduler's ``IntervalTrigger`` counts in float seconds from its
  start date, which differs between replicas and accumulates rounding).
* :class:`WallCron` evaluates a 5-field cron expression on the local wall clock of a time
  zone and follows cron(8) (Vixie/ISC cron, cronie) at daylight-saving changes; see its
  docstring. Every fire is one UTC instant, and a job's instants strictly increase.

Use ``timezone="UTC"`` (the default) for evenly spaced instants.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
# A minute or hour field that is one number: with both, a cron job is "fixed-time".
_SINGLE_VALUE = re.compile(r"[0-9]+")
# Offset changes are looked for at this spacing, then pinned to the microsecond by bisection.
# Daylight-saving changes are months apart; two that cancel out within 6 h would go unseen.
_PROBE = timedelta(hours=6)
# Offset changes crossed while looking for one fire, about two a year: centuries of them, for
# the sparsest schedules (29 February on a given weekday).
_MAX_CHANGES = 1_000


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
    """A 5-field cron expression on the wall clock of ``tz``, with cron(8)'s daylight saving.

    A job is *fixed-time* when its minute field and its hour field are each a single number
    (``30 1 * * *``, ``0 2 * * 1-5``); any ``*``, ``/``, ``,`` or ``-`` in either field makes
    it a *wildcard* job (``*/30 * * * *``, ``0 * * * *``, ``15 */2 * * *``, ``0,30 1 * * *``).
    This is the split Vixie/ISC cron and cronie make, except that they look only for a
    leading ``*``: there ``0,30 1 * * *`` and ``0 1-3 * * *`` count as fixed-time.

    * A wildcard job runs by the wall clock as it reads: it fires at every instant whose
      local time matches. When clocks go back, the repeated wall times fire in both
      halves (``*/30 * * * *`` in America/New_York: 01:00 and 01:30 EDT, then 01:00 and
      01:30 EST); when clocks go forward, the skipped wall times do not fire.
    * A fixed-time job fires once a matching day. A repeated wall time fires at its first
      occurrence only (``30 1 * * *`` in New York: 01:30 EDT, not 01:30 EST); a skipped one
      fires right after the change, at its instant (``30 2 * * *`` in New York: 03:00 EDT).

    Each fire is one UTC instant (the tick's identity): 01:30 EDT and 01:30 EST are two
    ticks. A job's instants strictly increase, in the fire loop and in catch-up alike.

    Raises:
        ValueError: the expression is malformed (APScheduler's message).
    """

    def __init__(self, expression: str, tz: tzinfo) -> None:
        # Evaluated on naive wall time dressed as UTC, a zone without transitions.
        self._wall = _Crontab(expression)
        self.expression = expression
        self.tz = tz
        minute, hour = expression.split()[:2]
        self.fixed_time = bool(_SINGLE_VALUE.fullmatch(minute) and _SINGLE_VALUE.fullmatch(hour))

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        # Strictly after the previous fire; at or after now when there is none.
        after = previous_fire_time if previous_fire_time is not None else now - _MICRO
        low = after.astimezone(UTC) + _MICRO  # the earliest instant that may fire
        # Walk the time line one stretch of constant UTC offset at a time: within one,
        # wall time and instants run in step.
        for _ in range(_MAX_CHANGES):
            offset = self._offset(low)
            wall: datetime | None = self._wall.get_next_fire_time(None, low + offset)
            if wall is None:
                return None
            fire = wall - offset
            change = self._change(low, fire, offset)
            if change is None:
                if self.fixed_time and self._first_occurrence(wall) != fire:
                    low = fire + _MICRO  # a repeated time, already fired at its first
                    continue
                return fire
            # The offset changes before that match: no fire in this stretch. A fixed-time
            # job whose wall time the change skips runs at the change.
            new_offset = self._offset(change)
            if self.fixed_time and new_offset > offset:
                skipped: datetime | None = self._wall.get_next_fire_time(None, change + offset)
                if skipped is not None and skipped < change + new_offset:
                    return change
            low = change
        return None

    def _offset(self, instant: datetime) -> timedelta:
        offset = instant.astimezone(self.tz).utcoffset()
        assert offset is not None  # an aware tzinfo always has one
        return offset

    def _change(self, start: datetime, end: datetime, offset: timedelta) -> datetime | None:
        """The first instant in ``(start, end]`` whose UTC offset is not ``offset``, if any."""
        probe = start
        while probe < end:
            ahead = min(probe + _PROBE, end)
            if self._offset(ahead) != offset:
                # offset at probe, another at ahead: bisect to the microsecond.
                low_us, high_us = _micros(probe), _micros(ahead)
                while high_us - low_us > 1:
                    mid = (low_us + high_us) // 2
                    if self._offset(_EPOCH + timedelta(microseconds=mid)) == offset:
                        low_us = mid
                    else:
                        high_us = mid
                return _EPOCH + timedelta(microseconds=high_us)
            probe = ahead
        return None

    def _first_occurrence(self, wall: datetime) -> datetime:
        # fold=0: the first of two instants showing a repeated wall time.
        return wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)

    def __str__(self) -> str:
        return f"cron {self.expression!r} ({self.tz})"


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class _Crontab:
    """A 5-field cron expression read as cron(8) reads it, on APScheduler's field engine.

    Two places where APScheduler 3's ``CronTrigger.from_crontab`` departs from crontab(5)
    are translated here:

    * **Day-of-week numbers**: in crontab 0 and 7 are Sunday, 1 Monday; APScheduler counts
      0 as Monday, so ``0 9 * * 1`` would fire on Tuesdays. The field is expanded to the
      set of days it names and handed over as day names.
    * **Day of month *or* day of week**: when both fields are restricted (neither starts
      with ``*``), crontab fires on a day matching *either* (``0 0 1 * mon``: the 1st and
      every Monday); APScheduler requires both. Such an expression becomes two triggers,
      and the earlier of their fires is taken.
    """

    def __init__(self, expression: str) -> None:
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
        minute, hour, day, month, weekday = fields
        days = _day_names(weekday)

        def trigger(day: str, weekday: str) -> CronTrigger:
            return CronTrigger(
                minute=minute, hour=hour, day=day, month=month, day_of_week=weekday, timezone=UTC
            )

        if day.startswith("*") or weekday.startswith("*"):
            self._triggers = [trigger(day, days)]
        else:
            self._triggers = [trigger(day, "*"), trigger("*", days)]

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        fires = [t.get_next_fire_time(previous, now) for t in self._triggers]
        found = [f for f in fires if f is not None]
        return min(found) if found else None


def _day_names(field: str) -> str:
    """A crontab day-of-week field as APScheduler day names (``*`` when every day)."""
    chosen: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"day of week {field!r}: bad step {step_text!r}")
        if base == "*":
            first, last = 0, 6
        else:
            low, _, high = base.partition("-")
            first = _weekday(low, field)
            last = _weekday(high, field) if high else (6 if step else first)
            if last < first:
                raise ValueError(f"day of week {field!r}: range {base!r} runs backwards")
        chosen |= {day % 7 for day in range(first, last + 1, step or 1)}
    if chosen == set(range(7)):
        return "*"
    return ",".join(_WEEKDAYS[day] for day in sorted(chosen))


def _weekday(text: str, field: str) -> int:
    """One crontab weekday: 0-7 (0 and 7 are Sunday) or a three-letter name."""
    name = text.lower()
    if name in _WEEKDAYS:
        return _WEEKDAYS.index(name)
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"day of week {field!r}: {text!r} is not 0-7 or sun-sat")


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
