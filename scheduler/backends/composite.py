"""The forwarding half of every backend façade, written once.

A backend keeps each role of :mod:`scheduler.backends.base` in an object of its own (one
module per role); its façade inherits :class:`RoleBackend`, builds those objects, hands them
to :meth:`RoleBackend.__init__` and writes only what belongs to the technology: ``from_url``,
``check``, ``preflight``, ``close``, ``__repr__``, and ``watch`` if the technology pushes a
loss (:class:`~scheduler.backends.base.LeaseNotifier` stays optional: this class has no
``watch``, so a façade that adds none is not a notifier, see
:func:`~scheduler.backends.base.watch_lease`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from scheduler.backends.base import Controls, LeaseStore, Presence, RunLedger, StartAnswer
from scheduler.backends.runs import Retention, RunRecord
from scheduler.leadership.lease import Holder, Lease, LeaseRecord
from scheduler.leadership.members import Member


class RoleBackend:
    """Every role method of :class:`~scheduler.backends.base.Backend`, each forwarded to the
    object that keeps the role; each method's contract is the role's docstring.

    Not a whole backend: the subclass adds ``url``, ``check``, ``preflight`` and ``close``
    (mypy checks it against :class:`~scheduler.backends.base.Backend` where
    :func:`scheduler.backends.from_url` returns it). The role objects are kept under names of
    this class; a façade that needs a technology-specific call keeps its own reference.

    Args:
        leases: the lease store.
        runs: the run ledger, batch methods included (a role object without a native batch
            inherits :class:`~scheduler.backends.base.BatchDefaults`).
        presence: the replicas' presence.
        controls: the operator controls.
    """

    def __init__(
        self, *, leases: LeaseStore, runs: RunLedger, presence: Presence, controls: Controls
    ) -> None:
        self._lease_store = leases
        self._run_ledger = runs
        self._presence = presence
        self._controls = controls

    # -- lease store ---------------------------------------------------------------------------

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """See :meth:`.LeaseStore.try_acquire`."""
        return self._lease_store.try_acquire(name, holder, ttl)

    def renew(self, lease: Lease) -> Lease:
        """See :meth:`.LeaseStore.renew`."""
        return self._lease_store.renew(lease)

    def release(self, lease: Lease) -> None:
        """See :meth:`.LeaseStore.release`."""
        self._lease_store.release(lease)

    def read(self, name: str) -> LeaseRecord | None:
        """See :meth:`.LeaseStore.read`."""
        return self._lease_store.read(name)

    def wait_for_change(self, name: str, timeout: float) -> None:
        """See :meth:`.LeaseStore.wait_for_change`."""
        self._lease_store.wait_for_change(name, timeout)

    # -- run ledger ----------------------------------------------------------------------------

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """See :meth:`.RunLedger.claim`."""
        return self._run_ledger.claim(lease, run, retention)

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """See :meth:`.RunLedger.claim_many`."""
        return self._run_ledger.claim_many(lease, runs, retention)

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        """See :meth:`.RunLedger.start`."""
        return self._run_ledger.start(lease, run)

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        """See :meth:`.RunLedger.start_many`."""
        return self._run_ledger.start_many(lease, runs)

    def finish(self, name: str, run: RunRecord) -> None:
        """See :meth:`.RunLedger.finish`."""
        self._run_ledger.finish(name, run)

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """See :meth:`.RunLedger.finish_many`."""
        self._run_ledger.finish_many(name, runs)

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """See :meth:`.RunLedger.lookup`."""
        return self._run_ledger.lookup(name, job, scheduled_time)

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """See :meth:`.RunLedger.unclaim`."""
        return self._run_ledger.unclaim(name, run)

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        """See :meth:`.RunLedger.history`."""
        return self._run_ledger.history(name, job, limit)

    def history_many(
        self, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]:
        """See :meth:`.RunLedger.history_many`."""
        return self._run_ledger.history_many(name, jobs, limit)

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """See :meth:`.RunLedger.claimed`."""
        return self._run_ledger.claimed(name, job, since, until)

    # -- presence ------------------------------------------------------------------------------

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """See :meth:`.Presence.announce`."""
        self._presence.announce(name, member, ttl)

    def withdraw(self, name: str, replica_id: str) -> None:
        """See :meth:`.Presence.withdraw`."""
        self._presence.withdraw(name, replica_id)

    def members(self, name: str) -> list[Member]:
        """See :meth:`.Presence.members`."""
        return self._presence.members(name)

    # -- controls ------------------------------------------------------------------------------

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """See :meth:`.Controls.set_control`."""
        self._controls.set_control(name, key, value)

    def controls(self, name: str) -> dict[str, str]:
        """See :meth:`.Controls.controls`."""
        return self._controls.controls(name)


__all__ = ["RoleBackend"]
