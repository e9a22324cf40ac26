"""Leadership terms and JobContext deadlines on a fake clock: no network, no wall clock."""

from __future__ import annotations

import pytest

from scheduler.clock import FakeClock
from scheduler.errors import LeadershipLost
from scheduler.leadership.lease import local_deadline
from tests.unit.terms import context, make_term


def test_local_deadline_counts_from_send_time_minus_drift() -> None:
    """The deadline is send time + ttl - (1% of ttl + 2 ms)."""
    assert local_deadline(100.0, 10.0) == pytest.approx(100.0 + 10.0 - 0.102)


def test_term_valid_until_renew_deadline_then_renewal_extends() -> None:
    """A term leads until sent_at + renew_deadline; a renewal sent later moves it."""
    clock = FakeClock()
    term = make_term(clock)
    clock.advance(5.9)
    assert term.valid()
    clock.advance(0.2)
    assert not term.valid()  # 6.1 s without a renewal: no new fire may start
    sent = clock.monotonic()
    term.renewed(term.lease.renewed(sent))
    assert term.valid() and term.leads_until() == pytest.approx(sent + 6)


def test_pause_past_the_lease_makes_check_raise_without_network() -> None:
    """After a stall longer than the lease, check() raises and time_left() <= 0."""
    clock = FakeClock()
    term = make_term(clock)
    ctx = context(term, clock)
    ctx.check()
    assert ctx.time_left() == pytest.approx(9 - 0.092)
    clock.advance(30)  # SIGSTOP, GC pause, frozen VM
    assert ctx.time_left() < 0
    with pytest.raises(LeadershipLost, match="deadline passed"):
        ctx.check()


def test_ending_a_term_sets_lost_once_and_check_raises() -> None:
    """end() sets the shared lost event exactly once; every context of the term sees it."""
    clock = FakeClock()
    term = make_term(clock)
    ctx = context(term, clock)
    assert term.end("renew_deadline") and not term.end("again")
    assert term.reason == "renew_deadline" and ctx.lost.wait(0)
    assert ctx.time_left() == 0
    with pytest.raises(LeadershipLost, match="lease lost"):
        ctx.check()
