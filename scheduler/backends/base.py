"""The coordination backend contract, in roles. Its docstrings are the contract every backend
passes (the suite in ``tests/contract/``, one module per role).

A backend keeps, per election name (the ``cluster``):

* one **lease** (:class:`LeaseStore`): a holder, a fencing token and a server-side expiry;
  a backend that hears of a loss by itself may also push it (:class:`LeaseNotifier`,
  optional);
* the **run records** of every job (:class:`RunLedger`): one per (job, fire instant), created
  by :meth:`~RunLedger.claim` only while the claimer holds the lease, so each fire runs at
  most once cluster-wide;
* the **presence** of its replicas (:class:`Presence`) and the operator **controls**
  (:class:`Controls`);

and answers a **preflight** (:class:`Preflight`). :class:`Backend` bundles the roles.

A run record carries the identity of the claim **attempt** that wrote it
(:attr:`~scheduler.backends.runs.RunRecord.attempt`) and its state (``claimed`` → ``running`` → an
outcome; see :mod:`scheduler.backends.runs`). The ledger's rules, each kept atomically:

* **identity**: :meth:`~RunLedger.start`, :meth:`~RunLedger.finish` and
  :meth:`~RunLedger.unclaim` act only on the record written by their own attempt; the
  fencing token alone does not identify a claim (one term may make several attempts at
  different fires, and before this rule a withdrawal of one attempt deleted the record of
  another that had run: CHAOS.md, F11);
* **a started fire is never given back**: :meth:`~RunLedger.unclaim` deletes only a
  ``claimed`` record; :meth:`~RunLedger.start` is fenced by the lease like
  :meth:`~RunLedger.claim`, so a ``claimed`` record of a term that is over can never start;
* **trimming keeps unfinished fires**: :meth:`~RunLedger.claim` trims by the one rule of
  :mod:`scheduler.backends.rules` (finished records beyond ``retention.limit``, older than
  ``retention.protect``), so a claimed or running fire never looks free.

Outcomes are kept apart: contention returns ``None``; acting on a lease that is no longer
ours raises :class:`~scheduler.errors.LeaseLost` (its reason a
:class:`~scheduler.backends.states.LossReason`); success returns a value. Any call may raise
:class:`~scheduler.errors.BackendUnavailable` (no answer within ``op_timeout``: transient,
the elector retries) or a :class:`~scheduler.errors.BackendPermanentError` (credentials
refused, an ACL that denies the operation, a read-only database, a newer schema: the
elector does not retry it, see :mod:`scheduler.leadership.elector`); no call blocks longer than
``op_timeout`` plus the connect time, and none retries internally — retry policy belongs to
the elector.

**Writing a backend**: implement the five roles (inherit :class:`BatchDefaults` unless the
batch methods have a native form), :class:`LeaseNotifier` only if the technology pushes
loss; the façade inherits :class:`~scheduler.backends.composite.RoleBackend`, which forwards
every role method to its role object; take TTL checks, lease grants, trimming and reasons
from :mod:`scheduler.backends.rules` and :mod:`scheduler.backends.states`; pass the
contract suite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Protocol, TypeAlias, runtime_checkable

from scheduler.backends.runs import Retention, RunRecord
from scheduler.errors import ClaimLost
from scheduler.leadership.lease import Holder, Lease, LeaseRecord
from scheduler.leadership.members import Member

#: Seconds one backend call may take before it fails, when the caller does not say
#: (the ``op_timeout`` setting; see :mod:`scheduler.ops.config` for its bounds).
DEFAULT_OP_TIMEOUT = 2.0


@runtime_checkable
class LeaseStore(Protocol):
    """One lease per election name, with fencing tokens (ShedLock's ``LockProvider`` shape)."""

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Take the lease ``name`` for ``holder`` for ``ttl`` seconds if nobody holds it.

        The fencing token is assigned in the same atomic step and is strictly greater than
        every token this backend has issued for ``name`` before.

        Returns:
            The new lease (:func:`~scheduler.backends.rules.granted`), whose local deadline
            counts from when the request was sent; ``None`` if another holder has it
            (contention).

        Raises:
            ValueError: ``ttl`` is not a usable TTL (:func:`~scheduler.backends.rules.check_ttl`).
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

        Followers waiting in :meth:`wait_for_change` are woken at once. Returns nothing and
        raises no :class:`~scheduler.errors.LeaseLost`: a lease that is not ours is left alone.
        """
        ...

    def read(self, name: str) -> LeaseRecord | None:
        """Observe the current holder of ``name`` without taking part.

        Returns:
            The holder's record; ``None`` if the lease is free (or expired).
        """
        ...

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` seconds, returning early when lease ``name`` is released.

        A follower calls this between attempts; a return is a hint to try again, not proof
        that the lease is free. A backend with notifications wakes at once; one without polls
        (SQLite). Never raises a backend error: the wait runs out its time instead, and the
        caller's next call reports the failure.
        """
        ...


@runtime_checkable
class LeaseNotifier(Protocol):
    """Optional: a lease store that learns of a loss by itself (a ZooKeeper watch, a session
    state change) and says so at once. Others have none; their loss shows at the next
    renewal. Call it through :func:`watch_lease`."""

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        """Call ``on_lost(reason)`` as soon as the backend itself learns ``lease`` is lost.

        ``reason`` is a :class:`~scheduler.backends.states.LossReason`. ``on_lost`` is called
        at most once per lease, never after :meth:`LeaseStore.release`, from a thread of the
        backend's, and must not block.
        """
        ...


#: What :meth:`RunLedger.start_many` answers for one run: the record as stored, or the
#: :class:`~scheduler.errors.ClaimLost` that :meth:`RunLedger.start` would have raised for
#: it, returned (not raised) so that one refused start does not fail the others.
StartAnswer: TypeAlias = RunRecord | ClaimLost


@runtime_checkable
class RunLedger(Protocol):
    """The run records of every job: one per fire, claimed under the lease.

    The batch methods (:meth:`claim_many`, :meth:`start_many`, :meth:`finish_many`,
    :meth:`history_many`) answer exactly as their single forms would one by one, in order;
    only the lease is checked once (per batch, or per chunk of a batch a backend splits; see
    each backend). A backend carries a batch in as few round trips (or transactions) as it
    can, or inherits the per-item loops of :class:`BatchDefaults`. A batch may take one
    ``op_timeout`` per chunk it is carried in, not one in all.
    """

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """Record ``run`` (state ``claimed``) as the one execution of its fire.

        Atomically checks that ``lease`` (holder and token) is still held and that the fire
        (``run.job``, ``run.scheduled_time``) is unclaimed, then stores ``run``; it also
        trims that job's history per ``retention`` by the rule of
        :func:`~scheduler.backends.rules.select_trim` (never an unfinished record). Sending
        the same attempt again is idempotent: a resend of a claim whose answer was lost
        returns the record that attempt stored.

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

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """Claim several fires under ``lease``: for each run, what :meth:`claim` answers.

        Returns:
            One answer per run, in order. A fire given twice is claimed by the first; the
            second gets what a second :meth:`claim` would (its own record if it is the same
            attempt, else ``None``).  An empty batch answers ``[]`` at once, without checking
            the lease.

        Raises:
            LeaseLost: as :meth:`claim`; checked before anything of the batch is stored.
            FireNotDue: as :meth:`claim`, for a fire of the batch (its ``wait`` lets the
                furthest one become due).
            When it raises, some runs of the batch may be stored (those of a chunk sent
            before the one that failed): the caller treats every run of the batch as
            unanswered and looks each up (:meth:`lookup`), or sends the batch again with the
            same attempts, which answers what the first sending stored (idempotent).
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
            ClaimLost: no ``claimed`` record of ``run.attempt``, with a
                :class:`~scheduler.backends.states.ClaimRefusal` reason: ``gone`` (given
                back, lost data), ``other-attempt``, or ``not-claimed`` (already started or
                finished).
        """
        ...

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        """Start several claimed fires under ``lease`` (every fire due at one instant, at
        that instant): for each run, what :meth:`start` answers.

        The lease is checked once, before any run is started: a lost lease fails the
        whole batch. A refusal of one run (:class:`~scheduler.errors.ClaimLost`) is that
        run's answer and does not stop the others.

        Returns:
            One answer per run, in order (:data:`StartAnswer`): ``run`` as stored, or the
            :class:`~scheduler.errors.ClaimLost` :meth:`start` would have raised for it
            (returned, not raised). A run given twice is started by the first; the second
            gets ``not-claimed``, as a second :meth:`start` would. An empty batch answers
            ``[]`` at once, without checking the lease.

        Raises:
            LeaseLost: ``lease`` is not held (checked first, once: nothing is started).
            When it raises (or any call fails), runs of a chunk sent before may be started:
            the caller looks each run up (never starts one blindly again).
        """
        ...

    def finish(self, name: str, run: RunRecord) -> None:
        """Store the outcome of ``run`` (a finished copy of a record returned by claim).

        Needs no lease: the history of a run must be kept even when leadership was lost
        during it. Updates only the record written by ``run.attempt``; a no-op (no error)
        when that record is gone (trimmed) or another attempt's.
        """
        ...

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """Store the outcomes of ``runs``, each as :meth:`finish` would, in order (of two
        outcomes of one attempt, the later stays).

        Needs no lease, and a run whose record is gone or another attempt's is skipped,
        as by :meth:`finish`.

        Raises:
            BackendUnavailable: as any call; some of the outcomes may be stored (saving one
                again is harmless).
        """
        ...

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The run record of (``job``, ``scheduled_time``).

        How a claimant learns the fate of a claim whose answer never reached it.

        Returns:
            The record; ``None`` if the fire is unclaimed or its record was trimmed.
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
        """The newest run records of ``job``.

        Returns:
            At most ``limit`` records, newest fire first; ``[]`` when ``limit <= 0``.
        """
        ...

    def history_many(
        self, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]:
        """The newest run records of each of ``jobs``, read together (the catch-up and an
        election read every job's history at once, not one round trip per job).

        Args:
            name: the cluster.
            jobs: the jobs to read (a job given twice is read once).
            limit: the most records per job.

        Returns:
            For every job of ``jobs``, what :meth:`history` answers for it: at most
            ``limit`` records, newest fire first; ``[]`` for a job without records, and
            for every job when ``limit <= 0``.
        """
        ...

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """The fires of ``job`` that have a record, in ``[since, until]`` (both included).

        Returns:
            Their fire keys (see :func:`scheduler.backends.runs.fire_key`).
        """
        ...


@runtime_checkable
class Presence(Protocol):
    """Which replicas are alive in a cluster, as they announce themselves."""

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Record ``member`` as alive in cluster ``name`` until ``ttl`` seconds pass without
        another announcement (replaces its previous record).

        Raises:
            ValueError: ``ttl`` is not a usable TTL (SQLite, Redis).
        """
        ...

    def withdraw(self, name: str, replica_id: str) -> None:
        """Remove the presence record of ``replica_id`` (a clean shutdown). Safe twice."""
        ...

    def members(self, name: str) -> list[Member]:
        """The replicas of cluster ``name`` whose presence has not expired.

        Returns:
            Their records, sorted by replica id.
        """
        ...


@runtime_checkable
class Controls(Protocol):
    """Operator controls: small durable strings per cluster, read by every replica.

    ``resign`` holds the token of the leader asked to step down; ``pause:<job>`` marks a job
    paused cluster-wide (see :mod:`scheduler.leadership.members` for the keys).
    """

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Set (or with ``None`` delete) the control ``key`` of cluster ``name``.

        Deleting a missing control is a no-op.
        """
        ...

    def controls(self, name: str) -> dict[str, str]:
        """Every control of cluster ``name``.

        Returns:
            Key to value; ``{}`` when none is set.
        """
        ...


@runtime_checkable
class Preflight(Protocol):
    """The checks a replica and the operator commands run before relying on a backend."""

    #: The backend URL with any password removed; used in every message about it.
    url: str

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


@runtime_checkable
class Backend(LeaseStore, RunLedger, Presence, Controls, Preflight, Protocol):
    """A whole backend: the lease store, the run ledger, presence, controls and preflight."""

    def close(self) -> None:
        """Release connections and threads. Does not release leases; safe twice."""
        ...


#: The contract's name before it was split into roles; kept so existing imports work.
LeaseBackend = Backend


class _SingleLedger(Protocol):
    """The single-item ledger methods :class:`BatchDefaults` loops over."""

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None: ...

    def start(self, lease: Lease, run: RunRecord) -> RunRecord: ...

    def finish(self, name: str, run: RunRecord) -> None: ...

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]: ...


class BatchDefaults:
    """The ledger's batch methods as loops over the single ones, one round trip per item.

    A mixin for backends with no batched form (a new backend's first version, a test
    double); the contract is the same either way. Every built-in backend has native
    batches (one script call, transaction or ``multi`` per chunk).
    """

    def claim_many(
        self: _SingleLedger, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """Claim each of ``runs`` in turn (see :meth:`RunLedger.claim_many`)."""
        return [self.claim(lease, run, retention) for run in runs]

    def start_many(
        self: _SingleLedger, lease: Lease, runs: Sequence[RunRecord]
    ) -> list[StartAnswer]:
        """Start each of ``runs`` in turn (see :meth:`RunLedger.start_many`).

        Raises:
            LeaseLost: as :meth:`RunLedger.start`; runs before the failing one may be
                started (checked once per run here, not once per batch).
        """
        answers: list[StartAnswer] = []
        for run in runs:
            try:
                answers.append(self.start(lease, run))
            except ClaimLost as refused:
                answers.append(refused)
        return answers

    def finish_many(self: _SingleLedger, name: str, runs: Sequence[RunRecord]) -> None:
        """Finish each of ``runs`` in turn (see :meth:`RunLedger.finish_many`)."""
        for run in runs:
            self.finish(name, run)

    def history_many(
        self: _SingleLedger, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]:
        """Read each job's history in turn (see :meth:`RunLedger.history_many`)."""
        return {job: self.history(name, job, limit) for job in dict.fromkeys(jobs)}


class _BatchLedger(Protocol):
    """The batch ledger methods :class:`SingleDefaults` answers single calls with."""

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]: ...

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]: ...

    def history_many(
        self, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]: ...


class SingleDefaults:
    """The ledger's ``claim``, ``start`` and ``history`` as batches of one: the mixin for a
    backend whose batches are its native form (the reverse of :class:`BatchDefaults`)."""

    def claim(
        self: _BatchLedger, lease: Lease, run: RunRecord, retention: Retention
    ) -> RunRecord | None:
        """Claim ``run`` as a batch of one (see :meth:`RunLedger.claim`).

        Raises:
            LeaseLost: the lease is not held (checked first); or what the backend's
                ``claim_many`` raises for the batch (e.g. ``FireNotDue`` on PostgreSQL).
        """
        return self.claim_many(lease, [run], retention)[0]

    def start(self: _BatchLedger, lease: Lease, run: RunRecord) -> RunRecord:
        """Start ``run`` as a batch of one (see :meth:`RunLedger.start`).

        Raises:
            LeaseLost: the lease is not held (checked first).
            ClaimLost: ``gone``, ``other-attempt`` or ``not-claimed``.
        """
        [answer] = self.start_many(lease, [run])
        if isinstance(answer, ClaimLost):
            raise answer
        return answer

    def history(self: _BatchLedger, name: str, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` run records of ``job``, newest fire first (see
        :meth:`RunLedger.history`)."""
        return self.history_many(name, [job], limit)[job]


def watch_lease(backend: object, lease: Lease, on_lost: Callable[[str], None]) -> bool:
    """Have ``backend`` call ``on_lost(reason)`` when it learns ``lease`` is lost, if it can.

    Returns:
        Whether the backend watches (it is a :class:`LeaseNotifier`); if not, the loss
        shows at the next renewal.
    """
    if isinstance(backend, LeaseNotifier):
        backend.watch(lease, on_lost)
        return True
    return False


__all__ = [
    "Backend",
    "BatchDefaults",
    "Controls",
    "LeaseBackend",
    "LeaseNotifier",
    "LeaseStore",
    "Preflight",
    "Presence",
    "RunLedger",
    "SingleDefaults",
    "StartAnswer",
    "watch_lease",
]
