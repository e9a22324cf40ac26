"""Liveness policy on a fake clock: a replica wedged while claiming leadership is unhealthy."""

from __future__ import annotations

import threading
from pathlib import Path

from scheduler.backends import from_url
from scheduler.clock import FakeClock
from scheduler.leadership.elector import STALL_THRESHOLD, Elector, Term
from scheduler.leadership.lease import Holder, Lease, local_deadline
from scheduler.leadership.timings import LeaseTimings


def test_wedged_leader_fails_liveness(tmp_path: Path) -> None:
    """Healthy while renewing in time; unhealthy once well past the renew deadline."""
    clock = FakeClock()
    timings = LeaseTimings.of(9)
    backend = from_url(f"sqlite:///{tmp_path}/b.db", clock=clock)
    elector = Elector(backend, "c", Holder.new("r1"), timings, clock)
    assert elector.health_problem() == "elector thread is not running"
    elector._thread = threading.current_thread()  # stands in for a live loop thread
    sent = clock.monotonic()
    elector._term = Term(
        Lease("c", elector.holder, 1, 9, sent, local_deadline(sent, 9)), timings, clock
    )

    def tick(seconds: float) -> None:
        clock.advance(seconds)
        elector._last_tick = clock.monotonic()  # the watchdog keeps ticking

    tick(timings.renew_deadline + timings.renew_interval)
    assert elector.health_problem() is None  # past the deadline, but within one bounded call
    tick(timings.op_timeout + 0.5)
    problem = elector.health_problem()
    assert problem is not None and "past the renew deadline" in problem
    elector._term.end("renew_deadline")
    assert elector.health_problem() is None
    clock.advance(STALL_THRESHOLD * 6)
    assert "watchdog silent" in (elector.health_problem() or "")
    backend.close()
