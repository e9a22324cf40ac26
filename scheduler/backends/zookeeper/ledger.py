"""The run ledger: one run node per claimed fire, written in transactions fenced by the latch.

**Claims** are one ``multi`` transaction: check the leader's latch node (path and version)
and create the run node. A claim without the latch fails, whoever tries it. A claim that
finds the node already there reads it: a resend of the same attempt gets its record back.
History is trimmed like Redis's: keep the newest ``limit`` fires, never one within
``protect`` seconds of the fire being claimed, and only finished records. The candidates
are read (all at once, one round trip) just before the transaction, which deletes each
finished one at the version read: a record started or finished meanwhile fails the
transaction, which is then retried once without trimming.

**Start, finish and unclaim** act on a run node only at the version whose data they read
and checked (the attempt, and the state where it matters), so no write lands between the
check and the act. Start's write also checks the latch node in the same transaction, as
claim's does: a claimed fire of a term that is over never starts.

Every write that lands is noted in :mod:`~.written` (what the node holds now, at which
version), for the batches of :mod:`~.batches` to plan from without reading it again; the
single calls themselves always read.
"""

from __future__ import annotations

import contextlib
import itertools
from datetime import datetime
from typing import Any

from kazoo.exceptions import (
    BadVersionError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    RolledBackError,
    RuntimeInconsistency,
    SessionExpiredError,
)

from scheduler.backends.rules import trim_window, trimmable
from scheduler.backends.runs import Retention, RunRecord, fire_key
from scheduler.backends.states import ClaimRefusal
from scheduler.backends.zookeeper.latch import DELETED, EXPIRED, MODIFIED, LatchNode
from scheduler.backends.zookeeper.lease import LatchLeases
from scheduler.backends.zookeeper.paths import Layout, key_name
from scheduler.backends.zookeeper.plans import outcome_of, refusal
from scheduler.backends.zookeeper.session import Session
from scheduler.backends.zookeeper.written import WrittenNodes
from scheduler.errors import BackendUnavailable, ClaimLost
from scheduler.leadership.lease import Lease


def failed_ops(results: list[Any]) -> list[Exception]:
    """The errors of a transaction's results, without the roll-backs they caused."""
    return [
        r
        for r in results
        if isinstance(r, Exception) and not isinstance(r, RolledBackError | RuntimeInconsistency)
    ]


def fire_keys(children: list[str]) -> list[int]:
    """The fire keys of a job directory's children (anything else there is ignored)."""
    keys = []
    for child in children:
        with contextlib.suppress(ValueError):
            keys.append(int(child))
    return keys


class ZooKeeperLedger:
    """Run nodes of every job, fenced by the leases of ``leases``.

    Args:
        session: the session to write through.
        layout: the node paths.
        leases: the lease store whose latch nodes fence claims and starts.
    """

    def __init__(self, session: Session, layout: Layout, leases: LatchLeases) -> None:
        self._session = session
        self._layout = layout
        self._leases = leases
        #: The run nodes this ledger wrote, for the batches to plan from (:mod:`~.written`).
        self._written = WrittenNodes()

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """Create the run node in one transaction with a check of the lease's latch node.

        The same transaction deletes the finished run nodes that fall out of ``retention``
        (listed, and read when there are any, just before it; deleted at the versions
        read), so a claim costs one or two round trips of reads and one write. A run node
        already there is read: a resend of ``run.attempt`` gets the record it stored.

        Raises:
            LeaseLost: the lease is not this holder's, or its node is gone or rewritten.
        """
        job_dir = self._layout.runs(lease.name, run.job)
        run_path = f"{job_dir}/{key_name(run.key)}"
        ticket = self._written.claiming()
        try:
            return self._claim(lease, run, retention, job_dir, run_path)
        finally:
            self._written.alone(ticket)
            self._written.unlist([job_dir])  # the next batch of the job lists it again

    def _claim(
        self, lease: Lease, run: RunRecord, retention: Retention, job_dir: str, run_path: str
    ) -> RunRecord | None:
        """:meth:`claim`, once its bookkeeping is done."""
        session = self._session
        with session.errors(f"claim {run.job!r}"):
            node, deadline = self._leases.fenced(lease)
            for pass_ in range(2):
                session.ensure(job_dir, deadline)
                # A trimmed node deleted or written by someone else meanwhile fails the whole
                # transaction: the second pass claims without trimming.
                victims = self._victims(job_dir, run, retention, deadline) if not pass_ else []
                transaction = session.client.transaction()
                transaction.check(node.path, node.version)
                transaction.create(run_path, run.to_json().encode(), acl=session.acl)
                for key, version in victims:
                    transaction.delete(f"{job_dir}/{key_name(key)}", version)
                results = self.commit(transaction, node, deadline)
                create, deletes = results[1], results[2:]
                if isinstance(create, NodeExistsError):
                    return self._resent(run_path, run, deadline)
                if isinstance(create, NoNodeError):
                    # The job's directory was deleted behind our cache: create it again.
                    session.forget(job_dir)
                    continue
                # BadVersion: a candidate was written after we read it, so what we checked is
                # no longer what we would delete; the retry keeps it.
                if any(
                    isinstance(r, NoNodeError | NotEmptyError | BadVersionError) for r in deletes
                ):
                    continue
                failed = failed_ops([create, results[0], *deletes])
                if failed:
                    raise failed[0]
                self._written.forget(f"{job_dir}/{key_name(key)}" for key, _ in victims)
                self._written.wrote(run_path, run, 0, node)
                return run
            raise BackendUnavailable(session.url, f"claim {run.job!r}: the history kept changing")

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        """Overwrite ``run.attempt``'s ``claimed`` run node with ``run``, lease checked.

        Reads the run node, checks its attempt and state, then writes it at the version read
        in one transaction with a check of the lease's latch node (as :meth:`claim` does). A
        node written meanwhile is read again (at most three reads).

        Raises:
            LeaseLost: the lease is not this holder's, or its node is gone or rewritten
                (checked first, also when the run node would refuse the start).
            ClaimLost: reason ``gone``, ``other-attempt`` or ``not-claimed``.
        """
        session = self._session
        run_path = self._layout.run(lease.name, run.job, run.key)
        with session.errors(f"start {run.job!r}"):
            node, deadline = self._leases.fenced(lease)
            for _ in range(3):
                try:
                    raw, stat = session.wait(session.client.get_async(run_path), deadline, "get")
                except NoNodeError:
                    raw, stat = None, None
                refused = refusal(raw, run, "claimed")
                transaction = session.client.transaction()
                transaction.check(node.path, node.version)
                if refused is None:
                    transaction.set_data(run_path, run.to_json().encode(), stat.version)
                # Without a write the transaction only checks the latch: LeaseLost is the
                # answer whenever the lease is gone, whatever the run node says.
                results = self.commit(transaction, node, deadline)
                if refused is not None:
                    raise ClaimLost(run.job, run.scheduled_time.isoformat(), refused)
                written = results[1]
                if isinstance(written, NoNodeError):
                    raise ClaimLost(run.job, run.scheduled_time.isoformat(), ClaimRefusal.GONE)
                if isinstance(written, BadVersionError):
                    continue  # written meanwhile (finished as lost, say): read it again
                failed = failed_ops(results)
                if failed:
                    raise failed[0]
                self._written.wrote(run_path, run, int(written.version), node)
                return run
            raise BackendUnavailable(session.url, f"start {run.job!r}: the record kept changing")

    def finish(self, name: str, run: RunRecord) -> None:
        """Overwrite the run node of ``run`` if ``run.attempt`` wrote it."""
        session = self._session
        path = self._layout.run(name, run.job, run.key)
        self._written.forget([path])  # an outcome is our last write to the node
        with session.errors(f"finish {run.job!r}"):
            deadline = session.begin()
            try:
                raw, stat = session.wait(session.client.get_async(path), deadline, "get")
            except NoNodeError:
                return
            if refusal(raw, run) is not None:
                return
            with contextlib.suppress(NoNodeError, BadVersionError):
                session.wait(
                    session.client.set_async(path, run.to_json().encode(), stat.version),
                    deadline,
                    "set",
                )

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The run node of (``job``, ``scheduled_time``), or ``None``."""
        session = self._session
        path = self._layout.run(name, job, fire_key(scheduled_time))
        with session.errors(f"lookup {job!r}"):
            deadline = session.begin()
            try:
                raw, _ = session.wait(session.client.get_async(path), deadline, "get")
            except NoNodeError:
                return None
        return RunRecord.from_json(raw)

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Delete the run node of ``run``'s fire at the version read, if that version is
        ``run.attempt``'s and ``claimed``."""
        session = self._session
        path = self._layout.run(name, run.job, run.key)
        self._written.forget([path])
        with session.errors(f"unclaim {run.job!r}"):
            deadline = session.begin()
            for _ in range(3):
                try:
                    raw, stat = session.wait(session.client.get_async(path), deadline, "get")
                except NoNodeError:
                    return False
                if refusal(raw, run, "claimed") is not None:
                    return False
                try:
                    session.wait(
                        session.client.delete_async(path, stat.version), deadline, "delete"
                    )
                except NoNodeError:
                    return False
                except BadVersionError:
                    continue  # started or finished meanwhile: read it again
                return True
            raise BackendUnavailable(session.url, f"unclaim {run.job!r}: the record kept changing")

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` run nodes of ``job``, newest fire first."""
        if limit <= 0:
            return []
        session = self._session
        job_dir = self._layout.runs(name, job)
        with session.errors(f"history {job!r}"):
            deadline = session.begin()
            keys = sorted(self._run_keys(job_dir, deadline), reverse=True)[:limit]
            # All reads in flight at once: one round trip, not one per record.
            pending = [session.client.get_async(f"{job_dir}/{key_name(k)}") for k in keys]
            records = []
            for result in pending:
                try:
                    raw, _ = session.wait(result, deadline, "get")
                except NoNodeError:
                    continue  # trimmed meanwhile
                records.append(RunRecord.from_json(raw))
        return records

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys of ``job`` with a run node in ``[since, until]``."""
        session = self._session
        job_dir = self._layout.runs(name, job)
        low, high = fire_key(since), fire_key(until)
        with session.errors(f"claimed {job!r}"):
            deadline = session.begin()
            return {k for k in self._run_keys(job_dir, deadline) if low <= k <= high}

    def commit(self, transaction: Any, node: LatchNode, deadline: float) -> list[Any]:
        """Commit ``transaction``, whose first operation checks ``node``; its results (for
        the batches of :mod:`~.batches` too).

        Raises:
            LeaseLost: the check failed (the lease is checked before anything else is
                reported), or the session expired.
        """
        try:
            results: list[Any] = self._session.wait(transaction.commit_async(), deadline, "multi")
        except SessionExpiredError:
            raise self._leases.lost(node, EXPIRED) from None
        check = results[0]
        if isinstance(check, NoNodeError):
            raise self._leases.lost(node, DELETED)
        if isinstance(check, BadVersionError):
            raise self._leases.lost(node, MODIFIED)
        return results

    def _run_keys(self, job_dir: str, deadline: float) -> list[int]:
        return fire_keys(self._session.children(job_dir, deadline))

    def _victims(
        self, job_dir: str, run: RunRecord, retention: Retention, deadline: float
    ) -> list[tuple[int, int]]:
        """Run nodes to delete with the claim of ``run``, as (fire key, version read), by
        the rule of :mod:`scheduler.backends.rules`: the finished ones beyond the newest
        ``limit``, never one within ``protect`` seconds before ``run`` (a new leader looks
        back that far), at most :data:`~scheduler.backends.rules.TRIM_SCAN` (one
        transaction's size).

        The candidates are read all at once (one round trip); an unfinished or unreadable
        one is kept, so trimming never frees a fire that is claimed or running.
        """
        session = self._session
        keys = sorted(k for k in self._run_keys(job_dir, deadline) if k != run.key)
        window = trim_window(len(keys) + 1, run.key, retention)
        if window.count <= 0:
            return []
        candidates = list(itertools.islice((k for k in keys if k < window.cutoff), window.count))
        pending = [session.client.get_async(f"{job_dir}/{key_name(k)}") for k in candidates]
        victims: list[tuple[int, int]] = []
        for key, result in zip(candidates, pending, strict=True):
            try:
                raw, stat = session.wait(result, deadline, "get")
            except NoNodeError:
                continue  # deleted meanwhile: nothing to trim
            if trimmable(outcome_of(raw)):
                victims.append((key, int(stat.version)))
        return victims

    def _resent(self, run_path: str, run: RunRecord, deadline: float) -> RunRecord | None:
        """The stored record of a fire claim found taken, if ``run.attempt`` stored it."""
        session = self._session
        try:
            raw, _ = session.wait(session.client.get_async(run_path), deadline, "get")
        except NoNodeError:
            return None  # given back since the create found it: the fire was taken then
        if refusal(raw, run) is not None:
            return None
        return RunRecord.from_json(raw)


__all__ = ["ZooKeeperLedger", "failed_ops", "fire_keys"]
