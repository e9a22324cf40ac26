"""A leadership term and a job's context on a fake clock, for the unit tests."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.clock import FakeClock
from scheduler.jobs.context import JobContext
from scheduler.leadership.lease import Holder, Lease, local_deadline
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings

TIMINGS = LeaseTimings.of(9)  # renew every 3 s, give up after 6 s


def make_term(clock: FakeClock, token: int = 42) -> Term:
    """A term of election ``c`` held by ``r1`` with a 9 s lease sent now."""
    sent = clock.monotonic()
    lease = Lease("c", Holder.new("r1"), token, 9.0, sent, local_deadline(sent, 9.0))
    return Term(lease, TIMINGS, clock)


def context(term: Term, clock: FakeClock, *, notify: bool = False) -> JobContext:
    """The context of job ``j`` in ``term``; ``notify``: its loss wakes ``wait_lost()``."""
    return JobContext(
        job="j",
        scheduled_time=datetime(2026, 1, 1, tzinfo=UTC),
        fencing_token=term.token,
        replica_id="r1",
        lost=term.lost,
        _deadline=term.lease_deadline,
        _clock=clock,
        _on_lost=term.on_end if notify else None,
    )
