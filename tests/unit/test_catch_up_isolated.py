"""One job's failing catch-up never disables the catch-up of the jobs after it.

``misfire_grace=float("inf")`` used to pass the decorator; the catch-up's ``timedelta`` then
raised ``OverflowError`` out of the loop over all jobs, so that job *and every job after it*
(jobs are sorted by name) were never caught up. The decorator now refuses it (see
tests/unit/test_jobs.py); this pins the loop's own isolation with a spec built around it.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.sqlite import SqliteBackend
from scheduler.clock import FakeClock
from scheduler.firing.runner import Runner
from scheduler.jobs.spec import build_spec
from scheduler.leadership.elector import Elector
from scheduler.leadership.lease import Holder
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.metrics import Metrics

NOW = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)


def _noop(ctx: object) -> None:
    """A job that does nothing."""


def test_a_failing_job_does_not_skip_the_catch_up_of_later_jobs(tmp_path: Path) -> None:
    """The first job's planning raises; the second job's missed fire is still queued."""
    broken = dataclasses.replace(
        build_spec(_noop, every="1s", name="a.broken", catch_up="latest"),
        misfire_grace=float("inf"),  # what the decorator used to let through
    )
    healthy = build_spec(_noop, every="1s", name="b.healthy", catch_up="latest")
    clock = FakeClock(start=1000.0, wall=NOW)
    backend = SqliteBackend.from_url(f"sqlite:///{tmp_path}/baton.db", clock=clock)
    timings = LeaseTimings.of(10.0)
    holder = Holder.new("r1")
    metrics = Metrics()
    elector = Elector(backend, "c", holder, timings, clock, metrics=metrics)
    runner = Runner(
        [broken, healthy],
        elector,
        backend,
        "c",
        clock=clock,
        replica_id=holder.replica_id,
        timings=timings,
        metrics=metrics,
    )
    try:
        lease = backend.try_acquire("c", holder, timings.lease_ttl)
        assert lease is not None
        ran = NOW - timedelta(seconds=20)
        for spec in (broken, healthy):
            run = RunRecord(spec.name, ran, "r0", lease.token, started=ran)
            backend.claim(lease, run.finished("ok", ran), Retention())
        # The elector is not started: the runner follows, so the queued fires never run.
        queued = runner.catch_up(Term(lease, timings, clock))
    finally:
        runner.close()
        backend.close()
    assert "a.broken" not in queued
    assert queued["b.healthy"] and queued["b.healthy"][-1] > ran
