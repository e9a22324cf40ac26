"""Leadership terms and JobContext deadlines on a fake clock: no network, no wall clock."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from scheduler.clock import FakeClock
from scheduler.errors import LeadershipLost
from scheduler.jobs.context import JobContext
from scheduler.leadership.lease import Holder, Lease, local_deadline
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings

TIMINGS = LeaseTimings.of(9)  # renew every 3 s, give up after 6 s


def make_term(clock: FakeClock) -> Term:
    sent = clock.monotonic()
    lease = Lease("c", Holder.new("r1"), 42, 9.0, sent, local_deadline(sent, 9.0))
    return Term(lease, TIMINGS, clock)


def context(term: Term, clock: FakeClock) -> JobContext:
    return JobContext(
        job="j",
        scheduled_time=datetime(2026, 1, 1, tzinfo=UTC),
        fencing_token=term.token,
        replica_id="r1",
        lost=term.lost,
        _deadline=term.lease_deadline,
        _clock=clock,
    )


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
