"""The coordination backend contract. Its docstrings are the contract every backend passes.

A backend keeps, per election name (the ``cluster``):

* one **lease**: a holder, a fencing token and a server-side expiry;
* the **run records** of every job: one per (job, fire instant), created by :meth:`claim`
  only while the claimer holds the lease, so each fire runs at most once cluster-wide.

A run record carries the identity of the claim **attempt** that wrote it
(:attr:`~scheduler.firing.runs.RunRecord.attempt`) and its state (``claimed`` → ``running`` → an
outcome; see :mod:`scheduler.firing.runs`). The shared rules every backend keeps, atomically:

* **identity**: :meth:`start`, :meth:`finish` and :meth:`unclaim` act only on the record
  written by their own attempt; the fencing token alone does not identify a claim (one
  term may make several attempts at different fires, and before this rule a withdrawal of
  one attempt deleted the record of another that had run: CHAOS.md, F11);
* **a started fire is never given back**: :meth:`unclaim` deletes only a ``claimed``
  record; :meth:`start` is fenced by the lease like :meth:`claim`, so a ``claimed`` record
  of a term that is over can never start any more;
* **trimming keeps unfinished fires**: :meth:`claim` trims only finished records
  (``ok``/``error``/``lost``) beyond ``retention.limit`` and older than
  ``retention.protect``, so a claimed or running fire never looks free.

Outcomes are kept apart: contention returns ``None``; acting on a lease that is no longer
ours raises :class:`~scheduler.errors.LeaseLost`; success returns a value. Any call may raise
:class:`~scheduler.errors.BackendUnavailable` (no answer within ``op_timeout``: transient,
the elector retries) or a :class:`~scheduler.errors.BackendPermanentError` (credentials
refused, an ACL that denies the operation, a read-only database, a newer schema: the
elector does not retry it, see :mod:`scheduler.leadership.elector`); no call blocks longer than
``op_timeout`` plus the connect time, and none retries internally — retry policy belongs to
the elector.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Protocol, runtime_checkable

from scheduler.firing.runs import Retention, RunRecord
from scheduler.leadership.lease import Holder, Lease, LeaseRecord
from scheduler.leadership.members import Member


@runtime_checkable
class LeaseBackend(Protocol):
    """A lease store with fencing tokens and claim records."""

    #: The backend URL with any password removed; used in every message about it.
    url: str

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Take the lease ``name`` for ``holder`` for ``ttl`` seconds if nobody holds it.

        The fencing token is assigned in the same atomic step and is strictly greater than
        every token this backend has issued for ``name`` before.

        Returns:
            The new lease, whose local deadline counts from when the request was sent;
            ``None`` if another holder has it (contention).
        """
        ...

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` by its TTL, only if ``lease.holder`` still holds it.

        Returns:
            The lease with a deadline counted from this request's send time; same token.

        Raises:
            LeaseLost: the lease expired, was released, deleted or taken by another holder.
        """
        ...

    def release(self, lease: Lease) -> None:
        """Give up ``lease`` if (and only if) its holder still holds it. Safe to call twice.

        Followers waiting in :meth:`wait_for_change` are woken at once.
        """
        ...

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        """Call ``on_lost(reason)`` as soon as the backend itself learns ``lease`` is lost.

        Optional speed-up over the renew loop: a backend with push notifications (a
        ZooKeeper watch on the latch node, a session state change) calls it at once; others
        do nothing and loss is found at the next renewal. ``on_lost`` must be called at most
        once per lease, must not be called after :meth:`release`, and must not block.
        """
        ...

    def read(self, name: str) -> LeaseRecord | None:
        """Observe the current holder of ``name`` without taking part; ``None`` if free."""
        ...

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when lease ``name`` is released.

        A follower calls this between attempts; a return is a hint to try again, not proof
        that the lease is free.
        """
        ...

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """Record ``run`` (state ``claimed``) as the one execution of its fire.

        Atomically checks that ``lease`` (holder and token) is still held and that the fire
        (``run.job``, ``run.scheduled_time``) is unclaimed, then stores ``run``; it also
        trims that job's finished history per ``retention`` (never an unfinished record).
        Sending the same attempt again is idempotent: a resend of a claim whose answer was
        lost returns the record that attempt stored.

        Returns:
            ``run`` as stored, or the stored record when it is ``run.attempt``'s own (a
            resend; it may have moved on from ``claimed``); ``None`` if another attempt
            claimed this fire.

        Raises:
            LeaseLost: ``lease`` is not held (checked before the duplicate check).
            FireNotDue: (backends that can lose claims, i.e. Redis) the fire lies further
                ahead of the backend's clock than its allowance; retry after ``wait``.
        """
        ...

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        """Mark the claimed fire of ``run.attempt`` as started: store ``run`` (``running``).

        The claimant calls this at the fire's instant, just before it calls the job, and
        calls the job only if it returns. Fenced like :meth:`claim`: it checks that
        ``lease`` is still held, so a ``claimed`` record of a term that is over can never
        start, and it acts only on a record in state ``claimed`` written by ``run.attempt``
        (never retried blindly: after an unanswered start the claimant looks the record up).

        Returns:
            ``run`` as stored.

        Raises:
            LeaseLost: ``lease`` is not held (checked first).
            ClaimLost: no ``claimed`` record of ``run.attempt``: gone (given back, lost
                data), another attempt's, or already started or finished.
        """
        ...

    def finish(self, name: str, run: RunRecord) -> None:
        """Store the outcome of ``run`` (a finished copy of a record returned by claim).

        Needs no lease: the history of a run must be kept even when leadership was lost
        during it. Updates only the record written by ``run.attempt``; a no-op when that
        record is gone (trimmed) or another attempt's.
        """
        ...

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The run record of (``job``, ``scheduled_time``); ``None`` if unclaimed or trimmed.

        How a claimant learns the fate of a claim whose answer never reached it.
        """
        ...

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Give back ``run``'s fire: delete its record if ``run.attempt`` wrote it and it
        is still ``claimed`` (never started), in one atomic step.

        The fire counts as unclaimed again, so a leader's catch-up may claim and run it. Only
        the claimant calls this, and only for a claim it never started and never will (an
        answer that came too late, leadership lost before the instant). Needs no lease: the
        claimant has usually lost it.

        Returns:
            ``True`` if the record was deleted; ``False`` if it is gone, another attempt's,
            or no longer ``claimed`` (a started fire is never given back).
        """
        ...

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` run records of ``job``, newest fire first."""
        ...

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys (see :func:`scheduler.firing.runs.fire_key`) claimed in ``[since, until]``."""
        ...

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Record ``member`` as alive in cluster ``name`` until ``ttl`` seconds pass without
        another announcement (replaces its previous record)."""
        ...

    def withdraw(self, name: str, replica_id: str) -> None:
        """Remove the presence record of ``replica_id`` (a clean shutdown). Safe twice."""
        ...

    def members(self, name: str) -> list[Member]:
        """Replicas whose presence has not expired, sorted by replica id."""
        ...

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Set (or with ``None`` delete) an operator control of cluster ``name``.

        Controls are small durable strings read by every replica: ``resign`` holds the token
        of the leader asked to step down; ``pause:<job>`` marks a job paused cluster-wide.
        """
        ...

    def controls(self, name: str) -> dict[str, str]:
        """Every control of cluster ``name``."""
        ...

    def check(self) -> None:
        """Verify the backend answers and accepts our credentials; writes nothing.

        Raises:
            BackendUnavailable: no answer in time.
            BackendPermanentError: credentials refused, or data this Baton cannot use.
        """
        ...

    def preflight(self, name: str) -> None:
        """Exercise every operation a replica of cluster ``name`` needs, once, harmlessly.

        ``baton run`` calls it at start-up (and the elector again while a permanent refusal
        lasts), so that a missing permission is one clear error before the replica joins,
        not a refusal found at the first claim. Writes only probe data of its own, which it
        removes, and the structure a replica would create anyway.

        Raises:
            BackendUnavailable: no answer in time (the replica starts and retries).
            BackendPermanentError: an operation is refused for good: credentials, an ACL,
                a read-only database, a newer schema, nodes not protected by our ACL.
        """
        ...

    def close(self) -> None:
        """Release connections and threads. Does not release leases."""
        ...
