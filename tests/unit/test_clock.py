"""The fake clock's waits: moving the clock wakes exactly the waiters that fall due."""

from __future__ import annotations

import threading

from scheduler.clock import SYSTEM_CLOCK, FakeClock
from tests.harness.replicas import wait_for

WAIT = 5.0


def _in_thread(target: object) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def test_sleep_returns_once_the_clock_reaches_its_deadline() -> None:
    """A sleeper counts in ``sleepers`` until an advance reaches its deadline, not before."""
    clock = FakeClock()
    sleeper = _in_thread(lambda: clock.sleep(2.0))
    wait_for(lambda: clock.sleepers == 1, WAIT, "the sleeper", 0.001)
    clock.advance(1.5)
    assert clock.sleepers == 1 and sleeper.is_alive()
    clock.advance(0.5)
    assert clock.sleepers == 0  # due: no longer counted, even before it runs
    sleeper.join(WAIT)
    assert not sleeper.is_alive()


def test_wait_returns_true_when_its_event_is_set_and_false_at_its_timeout() -> None:
    """``wait`` is ``Event.wait`` on fake time: set -> True at once; timeout -> False."""
    clock = FakeClock()
    event = threading.Event()
    results: list[bool] = []
    waiter = _in_thread(lambda: results.append(clock.wait(event, 10.0)))
    wait_for(lambda: clock.sleepers == 1, WAIT, "the waiter", 0.001)
    event.set()
    waiter.join(WAIT)
    assert results == [True]
    event.clear()
    waiter = _in_thread(lambda: results.append(clock.wait(event, 1.0)))
    wait_for(lambda: clock.sleepers == 1, WAIT, "the waiter", 0.001)
    clock.advance(1.0)
    waiter.join(WAIT)
    assert results == [True, False]


def test_waits_of_nothing_return_at_once() -> None:
    """Zero or negative durations do not block, on either clock."""
    clock = FakeClock()
    clock.sleep(0)
    clock.sleep(-1)
    assert clock.wait(threading.Event(), 0) is False
    SYSTEM_CLOCK.sleep(-1)
    assert SYSTEM_CLOCK.wait(threading.Event(), -1) is False
