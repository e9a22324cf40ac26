"""Helpers of the contract suite: holders, fire instants and run records, and the short
steps many tests take (acquire or fail, claim and finish at once)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from scheduler.backends import Backend
from scheduler.backends.runs import Outcome, Retention, RunRecord
from scheduler.leadership.lease import Holder, Lease

MakeBackend = Callable[..., Backend]
#: The ``expire_lease`` fixture: make the server expire the lease a backend holds, and wait.
ExpireLease = Callable[[Backend, str], None]

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LONG_TTL = 30.0
SHORT_TTL = 0.3


def holder(replica: str) -> Holder:
    """A fresh holder for ``replica``, on host ``host-<replica>``."""
    return Holder.new(replica, host=f"host-{replica}")


def at(seconds: float) -> datetime:
    """The fire instant ``seconds`` after :data:`BASE`."""
    return BASE + timedelta(seconds=seconds)


def now_ms(ahead: float = 0.0) -> datetime:
    """A real fire instant: now (plus ``ahead`` seconds), in whole milliseconds as fire keys
    are (for tests on servers whose clocks refuse fires far from now)."""
    moment = datetime.now(UTC) + timedelta(seconds=ahead)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def run_for(lease: Lease, when: datetime, job: str = "job") -> RunRecord:
    """A new claim (fresh attempt) of ``job``'s fire at ``when`` under ``lease``."""
    return RunRecord(
        job=job,
        scheduled_time=when,
        replica_id=lease.holder.replica_id,
        token=lease.token,
        started=datetime.now(UTC),
    )


def finished(run: RunRecord, outcome: Outcome = "ok") -> RunRecord:
    """``run`` as ended now with ``outcome``."""
    return run.finished(outcome, datetime.now(UTC))


def claim_finished(
    backend: Backend, lease: Lease, when: datetime, retention: Retention
) -> RunRecord:
    """Claim the fire at ``when`` and finish it ``ok`` at once; the finished record."""
    run = backend.claim(lease, run_for(lease, when), retention)
    assert run is not None
    done = finished(run)
    backend.finish(lease.name, done)
    return done


def wait_until(condition: Callable[[], object], timeout: float, poll: float = 0.01) -> bool:
    """Poll ``condition`` every ``poll`` seconds until it holds or ``timeout`` seconds pass;
    whether it held (the contract suite and the backend fault tests share it)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def acquire(backend: Backend, name: str, who: Holder, ttl: float = LONG_TTL) -> Lease:
    """Acquire the free lease ``name`` for ``who``; fail the test if it is not free."""
    lease = backend.try_acquire(name, who, ttl)
    assert lease is not None, f"{who.replica_id} could not acquire a free lease"
    return lease
