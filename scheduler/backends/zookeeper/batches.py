"""The run ledger's batches on ZooKeeper: reads in waves, then one ``multi`` per chunk.

A batch of claims costs, whatever its size (up to the wave and chunk sizes):

1. one round trip listing every job directory of the batch (``getChildren``, sent
   together), and one creating the directories that are missing;
2. one round trip reading the nodes the claims need to see: each batch fire that exists
   (a resend finds its record) and the trim candidates (:func:`~.plans.trim_reads`);
3. one ``multi`` per chunk (:func:`~.plans.chunked`), its first operation a check of the
   leader's latch node, so every chunk is fenced by the lease. A batch whose runs all
   write nothing still sends one multi with the check alone: a lost lease is an error
   even when every fire was claimed already, as for a single claim.

Starts are the same without the listing (one read of each run node, then the multis);
outcomes likewise, without the latch check (an outcome needs no lease). History reads list
the directories, then read the newest nodes of each: two rounds.

What each run answers and writes is planned by :mod:`~.plans` from the reads; every write
is conditional on what was read (a version, or a create that fails if the node exists).
A multi that fails because something moved meanwhile (another call of ours on the same
fire, a directory deleted behind the cache) is not retried as planned: its runs and every
later one are sent one by one through the single calls (inherited from
:class:`~.ledger.ZooKeeperLedger`), which answer them from the current state.

**The renewal waits for one chunk at most.** The session is one connection, and
ZooKeeper answers a session's requests in the order they were sent, so a renewal sent
during a batch waits behind the requests in flight. Requests are therefore sent in waves
of :data:`~.session.WAVE` reads and one multi at a time (each awaited before the next is
sent), and a multi is at most :data:`~.plans.MULTI_RUNS` runs: the renewal slips in
between, after a few milliseconds. Each wave and each multi has its own ``op_timeout``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from scheduler.backends.base import StartAnswer
from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.zookeeper.ledger import ZooKeeperLedger, failed_ops, fire_keys
from scheduler.backends.zookeeper.plans import (
    MISSING,
    JobNodes,
    Node,
    Step,
    chunked,
    plan_claims,
    plan_finishes,
    plan_starts,
    trim_reads,
)
from scheduler.errors import ClaimLost
from scheduler.leadership.lease import Lease

# What a failed operation of a planned multi means: something moved since it was read.
_MOVED = (NodeExistsError, NoNodeError, NotEmptyError, BadVersionError)


class ZooKeeperBatches(ZooKeeperLedger):
    """The whole :class:`~scheduler.backends.base.RunLedger` role: the single calls of
    :class:`~.ledger.ZooKeeperLedger` (also used for the runs of a multi that failed, see the
    module docstring, and for the fenced commit) and their native batch forms.

    Args:
        session: the session to read and write through.
        layout: the node paths.
        leases: the lease store whose latch nodes fence claims and starts.
    """

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """Claim ``runs``: reads in waves, then one fenced multi per chunk.

        Returns:
            Per run, what :meth:`~.ledger.ZooKeeperLedger.claim` answers, in order.

        Raises:
            LeaseLost: the lease is not held (checked by every multi; nothing of the
                failing multi is stored).
        """
        if not runs:
            return []
        session = self._session
        with session.errors("claim batch"):
            self._leases.fenced(lease)  # a lease known lost fails before any read
            jobs = self._job_nodes(lease.name, runs, retention)
            path_of = partial(self._layout.run, lease.name)
            answers, steps = plan_claims(runs, retention, jobs, path_of)
            resume = self._commit(lease, steps, len(runs))
        for index in range(resume, len(runs)):
            answers[index] = self.claim(lease, runs[index], retention)
        return answers

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        """Start ``runs``: one wave of reads, then one fenced multi per chunk.

        Returns:
            Per run, in order: the run, or the :class:`ClaimLost` ``start`` would raise.

        Raises:
            LeaseLost: the lease is not held (checked by every multi).
        """
        if not runs:
            return []
        with self._session.errors("start batch"):
            self._leases.fenced(lease)
            path_of = partial(self._layout.run, lease.name)
            answers, steps = plan_starts(runs, self._read_runs(runs, path_of), path_of)
            resume = self._commit(lease, steps, len(runs))
        for index in range(resume, len(runs)):
            try:
                answers[index] = self.start(lease, runs[index])
            except ClaimLost as refused:
                answers[index] = refused
        return answers

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """Store the outcomes of ``runs``: one wave of reads, then one multi per chunk."""
        if not runs:
            return
        with self._session.errors("finish batch"):
            path_of = partial(self._layout.run, name)
            steps = plan_finishes(runs, self._read_runs(runs, path_of), path_of)
            resume = self._commit(None, steps, len(runs)) if steps else len(runs)
        for run in runs[resume:]:
            self.finish(name, run)

    def history_many(
        self, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]:
        """The newest ``limit`` run nodes of each of ``jobs``: their directories listed
        together, then their newest nodes read together."""
        wanted = list(dict.fromkeys(jobs))
        found: dict[str, list[RunRecord]] = {job: [] for job in wanted}
        if limit <= 0 or not wanted:
            return found
        session = self._session
        with session.errors("history batch"):
            listed = self._list(name, wanted)
            reads = [
                (job, self._layout.run(name, job, key))
                for job in wanted
                for key in sorted(listed[job] or [], reverse=True)[:limit]
            ]
            answers = session.gather(
                [partial(session.client.get_async, path) for _, path in reads], "get"
            )
        for (job, _), answer in zip(reads, answers, strict=True):
            if not isinstance(answer, NoNodeError):  # trimmed meanwhile
                found[job].append(RunRecord.from_json(answer[0]))
        return found

    # -- reads ---------------------------------------------------------------------------------

    def _list(self, name: str, jobs: list[str]) -> dict[str, list[int] | None]:
        """The fire keys of each of ``jobs``; ``None`` for a job without a directory."""
        session = self._session
        answers = session.gather(
            [partial(session.client.get_children_async, self._layout.runs(name, j)) for j in jobs],
            "getChildren",
        )
        return {
            job: None if isinstance(answer, NoNodeError) else fire_keys(answer)
            for job, answer in zip(jobs, answers, strict=True)
        }

    def _job_nodes(
        self, name: str, runs: Sequence[RunRecord], retention: Retention
    ) -> dict[str, JobNodes]:
        """What the claims of ``runs`` need to see of each job: its fire keys and the
        nodes :func:`~.plans.trim_reads` names, plus the batch's fires that exist. Creates
        the job directories that are missing."""
        session = self._session
        fires: dict[str, list[int]] = {}
        for run in runs:
            fires.setdefault(run.job, []).append(run.key)
        listed = self._list(name, list(fires))
        missing = [self._layout.runs(name, job) for job, keys in listed.items() if keys is None]
        for path in missing:
            session.forget(path)  # deleted behind the cache, if it was known
        session.ensure_all(missing)
        jobs = {job: JobNodes(sorted(keys or [])) for job, keys in listed.items()}
        reads: list[tuple[str, int]] = []
        for job, read in jobs.items():
            existing = set(read.keys)
            batch = [key for key in dict.fromkeys(fires[job]) if key in existing]
            candidates = trim_reads(read.keys, fires[job], retention)
            reads += [(job, key) for key in dict.fromkeys([*batch, *candidates])]
        answers = session.gather(
            [partial(session.client.get_async, self._layout.run(name, j, k)) for j, k in reads],
            "get",
        )
        for (job, key), answer in zip(reads, answers, strict=True):
            jobs[job].nodes[key] = _node(answer)
        return jobs

    def _read_runs(
        self, runs: Sequence[RunRecord], path_of: Callable[[str, int], str]
    ) -> dict[str, Node]:
        """The run node of each of ``runs``, by path (read together)."""
        session = self._session
        paths = list(dict.fromkeys(path_of(run.job, run.key) for run in runs))
        answers = session.gather([partial(session.client.get_async, p) for p in paths], "get")
        return {path: _node(answer) for path, answer in zip(paths, answers, strict=True)}

    # -- writes --------------------------------------------------------------------------------

    def _commit(self, lease: Lease | None, steps: list[Step], total: int) -> int:
        """Send ``steps`` in multis, one chunk at a time, each checking ``lease``'s latch
        node first when there is a lease (then at least one multi is sent, with the check
        alone when there are no steps).

        Returns:
            Where the single calls must take over: the batch index of the first run of a
            multi that failed because something moved; ``total`` (the batch's size) when
            all landed.

        Raises:
            LeaseLost: a check failed.
        """
        for chunk in list(chunked(steps)) or [[]]:
            if not self._send(lease, chunk) and chunk:
                return chunk[0].index
        return total

    def _send(self, lease: Lease | None, chunk: Sequence[Step]) -> bool:
        """One multi of ``chunk``'s operations, after a check of ``lease``'s latch node if
        given; whether every operation landed."""
        session = self._session
        transaction = session.client.transaction()
        node = None
        if lease is not None:
            node, deadline = self._leases.fenced(lease)
            transaction.check(node.path, node.version)
        else:
            deadline = session.begin()
        for step in chunk:
            for op in step.ops:
                if op.kind == "create":
                    transaction.create(op.path, op.data, acl=session.acl)
                elif op.kind == "set":
                    transaction.set_data(op.path, op.data, op.version)
                else:
                    transaction.delete(op.path, op.version)
        results: list[Any]
        if node is not None:
            results = self.commit(transaction, node, deadline)
        else:
            results = session.wait(transaction.commit_async(), deadline, "multi")
        errors = failed_ops(results)
        if errors and not all(isinstance(error, _MOVED) for error in errors):
            raise errors[0]
        return not errors


def _node(answer: Any) -> Node:
    """A run node from the answer of ``get``: data and version, or :data:`MISSING`."""
    if isinstance(answer, NoNodeError):
        return MISSING
    raw, stat = answer
    return Node(raw, int(stat.version))


__all__ = ["ZooKeeperBatches"]
