"""What a new leader's catch-up queues, on the embedded backend and a fake clock."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.sqlite import SqliteBackend
from scheduler.clock import FakeClock
from scheduler.firing.runner import Runner
from scheduler.jobs.spec import JobSpec
from scheduler.leadership.elector import Elector
from scheduler.leadership.lease import Holder
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.metrics import Metrics


def queued_by_catch_up(
    tmp_path: Path,
    spec: JobSpec,
    ran: list[datetime],
    now: datetime,
    controls: dict[str, str] | None = None,
) -> list[datetime]:
    """The fires of ``spec`` a leader taking over at ``now`` queues, after runs at ``ran``
    (under an earlier token's holder) and with operator ``controls`` set."""
    clock = FakeClock(start=1000.0, wall=now)
    backend = SqliteBackend.from_url(f"sqlite:///{tmp_path}/baton.db", clock=clock)
    timings = LeaseTimings.of(10.0, None, None)
    holder = Holder.new("r1")
    metrics = Metrics()
    elector = Elector(backend, "c", holder, timings, clock, metrics=metrics)
    runner = Runner(
        [spec],
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
        for fire in ran:
            run = RunRecord(spec.name, fire, "r0", lease.token, started=fire)
            backend.claim(lease, run.finished("ok", fire), Retention())
        for key, value in (controls or {}).items():
            backend.set_control("c", key, value)
        # The elector is not started: the runner follows, so the queued fires never run.
        return runner.catch_up(Term(lease, timings, clock)).get(spec.name, [])
    finally:
        runner.close()
        backend.close()
