"""Liveness policy on a fake clock: a replica wedged while claiming leadership is unhealthy."""

from __future__ import annotations

from scheduler.clock import FakeClock
from scheduler.leadership.health import STALL_THRESHOLD, liveness_problem
from scheduler.leadership.lease import Holder, Lease, local_deadline
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings

TIMINGS = LeaseTimings.of(9)


def _term(clock: FakeClock) -> Term:
    sent = clock.monotonic()
    lease = Lease("c", Holder.new("r1"), 1, 9, sent, local_deadline(sent, 9))
    return Term(lease, TIMINGS, clock)


def test_a_dead_loop_thread_is_unhealthy() -> None:
    """No running loop thread: unhealthy, whatever else holds."""
    clock = FakeClock()
    problem = liveness_problem(False, 0.0, None, TIMINGS, clock.monotonic())
    assert problem == "elector thread is not running"


def test_wedged_leader_fails_liveness() -> None:
    """Healthy while renewing in time; unhealthy once well past the renew deadline; healthy
    again once the term has ended."""
    clock = FakeClock()
    term = _term(clock)

    def problem() -> str | None:
        return liveness_problem(True, 0.0, term, TIMINGS, clock.monotonic())

    clock.advance(TIMINGS.renew_deadline + TIMINGS.renew_interval)
    assert problem() is None  # past the deadline, but within one bounded call
    clock.advance(TIMINGS.op_timeout + 0.5)
    assert "past the renew deadline" in (problem() or "")
    term.end("renew_deadline")
    assert problem() is None


def test_a_silent_watchdog_fails_liveness() -> None:
    """The stall watchdog silent for more than five stall thresholds: unhealthy."""
    clock = FakeClock()
    assert liveness_problem(True, STALL_THRESHOLD * 5, None, TIMINGS, clock.monotonic()) is None
    problem = liveness_problem(True, STALL_THRESHOLD * 6, None, TIMINGS, clock.monotonic())
    assert problem == "watchdog silent for 6.0 s"
