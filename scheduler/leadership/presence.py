"""Presence: this replica's record in the cluster (who, where, which version, which jobs).

The record is refreshed every renew interval by the election loop (leader and followers
alike) and expires ``lease_ttl`` after its last refresh, so ``baton status`` lists the live
replicas and ``baton pause`` can check a job name against the jobs they schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from scheduler.backends import base
from scheduler.clock import Clock
from scheduler.errors import BackendError, BackendPermanentError
from scheduler.leadership.lease import Holder
from scheduler.leadership.members import Member
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.logs import get_logger


def _version() -> str:
    from scheduler import __version__  # the package imports this module: read it late

    return __version__


class Announcer:
    """Announces and withdraws this replica's presence record.

    Args:
        backend: where presence records live.
        cluster: the election name.
        holder: this replica's identity.
        jobs: the names of the jobs this replica schedules.
        timings: ``renew_interval`` (how often) and ``lease_ttl`` (how long a record lives).
        clock: monotonic time for the schedule, wall time for the record's stamps.
        report: called with a permanent backend error (it ends leadership).
    """

    def __init__(
        self,
        backend: base.Presence,
        cluster: str,
        holder: Holder,
        jobs: Sequence[str],
        timings: LeaseTimings,
        clock: Clock,
        report: Callable[[BackendError], None],
    ) -> None:
        self._backend = backend
        self._cluster = cluster
        self._holder = holder
        self._jobs = tuple(jobs)
        self._timings = timings
        self._clock = clock
        self._report = report
        self._log = get_logger(replica=holder.replica_id)
        self._started = clock.now()
        self._announced_at: float | None = None

    def due(self) -> bool:
        """True when the record (and with it the controls) was last refreshed a renew
        interval ago, or never."""
        last = self._announced_at
        return last is None or self._clock.monotonic() - last >= self._timings.renew_interval

    def never_announced(self) -> bool:
        """True until this replica's first announcement that the backend took."""
        return self._announced_at is None

    def announce(self) -> None:
        """Refresh this replica's presence record; a failure is reported (permanent) or
        logged as ``announce_failed`` (transient), and retried when next due."""
        now = self._clock.monotonic()
        member = Member(
            replica_id=self._holder.replica_id,
            host=self._holder.host,
            version=_version(),
            started=self._started,
            last_seen=self._clock.now(),
            jobs=self._jobs,
        )
        try:
            self._backend.announce(self._cluster, member, self._timings.lease_ttl)
            self._announced_at = now
        except BackendPermanentError as exc:
            self._report(exc)
        except BackendError as exc:
            self._log.warning("announce_failed", error=str(exc))

    def withdraw(self) -> None:
        """Remove this replica's presence record (clean shutdown); best effort."""
        try:
            self._backend.withdraw(self._cluster, self._holder.replica_id)
        except BackendError as exc:
            self._log.warning("withdraw_failed", error=str(exc))
