"""The fire loop hands each instant's fires over together, ahead by the burst's claim time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler.clock import FakeClock
from scheduler.firing.catchup import CLAIM_AHEAD, MOST_AHEAD
from scheduler.firing.fireloop import FireLoop, Pace
from scheduler.ops.logs import get_logger

START = datetime(2026, 1, 1, tzinfo=UTC)
T = START + timedelta(seconds=10)


class Handovers:
    """Records each hand-over call; lets a test wait for the n-th."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[list[tuple[str, datetime]]] = []
        self._cond = threading.Condition()
        self._fail_first = fail_first

    def __call__(self, fires: list[tuple[str, datetime]]) -> None:
        with self._cond:
            self.calls.append(list(fires))
            self._cond.notify_all()
        if self._fail_first and len(self.calls) == 1:
            raise RuntimeError("a bug in the hand-over")

    def none_yet(self) -> bool:
        """No hand-over within a moment (the loop had time to look at the moved clock)."""
        with self._cond:
            return not self._cond.wait_for(lambda: bool(self.calls), timeout=0.3)

    def wait(self, count: int) -> list[list[tuple[str, datetime]]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.calls) >= count, timeout=10), (
                f"{len(self.calls)} hand-overs, waited for {count}"
            )
            return list(self.calls)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(wall=START)


def at_once(instant: datetime) -> DateTrigger:
    return DateTrigger(run_date=instant, timezone=UTC)


@pytest.fixture
def loops() -> Iterator[list[FireLoop]]:
    made: list[FireLoop] = []
    yield made
    for loop in made:
        loop.stop()


def make(
    loops: list[FireLoop], triggers: dict[str, object], clock: FakeClock, pace: Pace, h: Handovers
) -> FireLoop:
    loop = FireLoop(triggers, h, clock, pace, get_logger())  # type: ignore[arg-type]
    loops.append(loop)
    loop.start()
    return loop


def move_to(clock: FakeClock, loop: FireLoop, when: datetime) -> None:
    clock.advance((when - clock.now()).total_seconds())
    loop.wake()


def test_every_fire_of_an_instant_is_handed_over_in_one_call(
    clock: FakeClock, loops: list[FireLoop]
) -> None:
    h = Handovers()
    jobs = {f"j{i}": at_once(T) for i in range(5)}
    loop = make(loops, jobs, clock, Pace(), h)
    move_to(clock, loop, T - CLAIM_AHEAD - timedelta(milliseconds=1))  # lead: 100.25 ms
    assert h.none_yet()
    move_to(clock, loop, T - CLAIM_AHEAD)
    [call] = h.wait(1)
    assert sorted(call) == sorted((job, T) for job in jobs)
    assert all(loop.unhanded(job) is None for job in jobs)  # a date trigger fires once


def test_a_burst_is_handed_over_earlier_by_the_time_its_claims_take(
    clock: FakeClock, loops: list[FireLoop]
) -> None:
    pace = Pace()
    pace.per_fire = 100e-6  # 2,000 fires: 200 ms of claims, plus the least lead
    h = Handovers()
    jobs = {f"j{i}": at_once(T) for i in range(2000)}
    loop = make(loops, jobs, clock, pace, h)
    move_to(clock, loop, T - timedelta(milliseconds=301))
    assert h.none_yet()
    move_to(clock, loop, T - timedelta(milliseconds=299))
    [call] = h.wait(1)
    assert len(call) == 2000


def test_the_lead_never_exceeds_the_most(clock: FakeClock, loops: list[FireLoop]) -> None:
    pace = Pace()
    pace.per_fire = 1.0  # a backend that took a second per fire
    assert pace.lead(1) == MOST_AHEAD
    h = Handovers()
    loop = make(loops, {"a": at_once(T)}, clock, pace, h)
    move_to(clock, loop, T - MOST_AHEAD - timedelta(milliseconds=1))
    assert h.none_yet()
    move_to(clock, loop, T - MOST_AHEAD)
    assert h.wait(1) == [[("a", T)]]


def test_a_bigger_later_burst_goes_before_a_smaller_earlier_one(
    clock: FakeClock, loops: list[FireLoop]
) -> None:
    pace = Pace()
    pace.per_fire = 100e-6
    later = T + timedelta(milliseconds=100)  # 3,000 fires: lead 400 ms, handed at T - 300 ms
    jobs: dict[str, object] = {f"big{i}": at_once(later) for i in range(3000)}
    jobs["small"] = at_once(T)  # lead 100 ms: handed at T - 100 ms
    h = Handovers()
    loop = make(loops, jobs, clock, pace, h)
    move_to(clock, loop, T - timedelta(milliseconds=299))
    [first] = h.wait(1)
    assert {instant for _, instant in first} == {later}
    assert loop.unhanded("small") == T
    move_to(clock, loop, T - CLAIM_AHEAD + timedelta(milliseconds=1))
    assert h.wait(2)[1] == [("small", T)]


def test_the_next_instant_follows_a_hand_over(clock: FakeClock, loops: list[FireLoop]) -> None:
    h = Handovers(fail_first=True)  # a hand-over that raises does not end the loop
    loop = make(loops, {"a": IntervalTrigger(seconds=10, start_date=T)}, clock, Pace(), h)
    assert loop.unhanded("a") == T
    move_to(clock, loop, T)
    assert h.wait(1) == [[("a", T)]]
    nxt = T + timedelta(seconds=10)
    move_to(clock, loop, nxt)
    assert h.wait(2)[1] == [("a", nxt)]
    assert loop.running
    assert loop.unhanded("a") == nxt + timedelta(seconds=10)


def test_missed_instants_are_each_handed_over_after_a_jump(
    clock: FakeClock, loops: list[FireLoop]
) -> None:
    # The wall clock stepped 30 s forward (or the process was stopped): every instant
    # passed is handed over, oldest first; the lanes decide what to coalesce.
    h = Handovers()
    loop = make(loops, {"a": IntervalTrigger(seconds=10, start_date=T)}, clock, Pace(), h)
    move_to(clock, loop, T + timedelta(seconds=25))
    calls = h.wait(3)
    assert [fire for call in calls for fire in call][:3] == [
        ("a", T + timedelta(seconds=s)) for s in (0, 10, 20)
    ]


def test_stop_ends_the_thread(clock: FakeClock, loops: list[FireLoop]) -> None:
    loop = make(loops, {"a": at_once(T)}, clock, Pace(), Handovers())
    assert loop.running
    loop.stop()
    loop.thread.join(timeout=10)
    assert not loop.thread.is_alive() and not loop.running


def test_pace_follows_the_claims() -> None:
    pace = Pace()
    for _ in range(30):
        pace.record(0.2, 1000)  # 200 µs per fire
    assert pace.per_fire == pytest.approx(200e-6, rel=0.01)
    expected = CLAIM_AHEAD + timedelta(milliseconds=200)
    assert pace.lead(1000).total_seconds() == pytest.approx(expected.total_seconds(), rel=0.01)
