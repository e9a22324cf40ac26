"""The run ledger's batches on ZooKeeper: reads in waves, then one ``multi`` per chunk.

A batch of claims costs, whatever its size (up to the wave and chunk sizes):

1. one round trip listing the job directories of the batch (``getChildren``, sent
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

**What this ledger wrote needs no read** (:mod:`~.written`): a start or an outcome of a run
whose node this ledger wrote (its claim, its start) is planned from the version it left
there, and a job it listed and claimed under the same latch node is not listed again while
none of the batch's claims can trim (``retention.limit`` not reached). So a burst of fires
claimed, started and ended by one leader costs one ``multi`` per chunk at each of the three
steps, nothing per fire; only the first burst of a term, and every claim that trims, read.
The multis stay conditional on what the plan assumed (plus a check of the latch node that
fenced a remembered write, for outcomes), so whatever moved meanwhile fails them as below.

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

from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError, NotEmptyError

from scheduler.backends.base import StartAnswer
from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.zookeeper.latch import LatchNode
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
from scheduler.backends.zookeeper.session import READ_WAVE
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
        ticket = self._written.claiming()
        resume, latch = 0, None
        jobs: dict[str, JobNodes] = {}
        steps: list[Step] = []
        try:
            with session.errors("claim batch"):
                latch, _ = self._leases.fenced(lease)  # a lease known lost fails first
                jobs = self._job_nodes(lease.name, runs, retention, latch)
                path_of = partial(self._layout.run, lease.name)
                answers, steps = plan_claims(runs, retention, jobs, path_of)
                resume = self._commit(lease, steps, runs)
        finally:
            landed = self._written.alone(ticket) and resume == len(runs)
            self._relist(lease.name, runs, jobs, steps, latch if landed else None)
        for index in range(resume, len(runs)):
            answers[index] = self.claim(lease, runs[index], retention)
        return answers

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        """Start ``runs``: one wave of reads (of the nodes this ledger did not claim under
        the lease's latch node, :mod:`~.written`), then one fenced multi per chunk.

        Returns:
            Per run, in order: the run, or the :class:`ClaimLost` ``start`` would raise.

        Raises:
            LeaseLost: the lease is not held (checked by every multi).
        """
        if not runs:
            return []
        with self._session.errors("start batch"):
            latch, _ = self._leases.fenced(lease)
            path_of = partial(self._layout.run, lease.name)
            nodes, _ = self._run_nodes(runs, path_of, "claimed", latch)
            answers, steps = plan_starts(runs, nodes, path_of)
            resume = self._commit(lease, steps, runs)
        for index in range(resume, len(runs)):
            try:
                answers[index] = self.start(lease, runs[index])
            except ClaimLost as refused:
                answers[index] = refused
        return answers

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """Store the outcomes of ``runs``: one wave of reads (of the nodes this ledger did
        not write, :mod:`~.written`), then one multi per chunk; a chunk with runs planned
        from remembered nodes also checks the latch nodes those were written under."""
        if not runs:
            return
        with self._session.errors("finish batch"):
            path_of = partial(self._layout.run, name)
            nodes, fences = self._run_nodes(runs, path_of, None, None)
            steps = plan_finishes(runs, nodes, path_of)
            resume = self._commit(None, steps, runs, fences) if steps else len(runs)
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
                [partial(session.client.get_async, path) for _, path in reads],
                "get",
                wave=READ_WAVE,
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
        self, name: str, runs: Sequence[RunRecord], retention: Retention, latch: LatchNode
    ) -> dict[str, JobNodes]:
        """What the claims of ``runs`` need to see of each job: its fire keys and the
        nodes :func:`~.plans.trim_reads` names, plus the batch's fires that exist. Creates
        the job directories that are missing.

        A job is not listed when this ledger knows its directory from a batch under the
        same latch node (:meth:`~.written.WrittenNodes.listing`), every fire of the batch
        is newer than its newest child, and its children with the batch's fires stay
        within ``retention.limit``: no claim of the batch trims, and none finds its node
        there (only the lease's holder creates run nodes; a create that fails anyway fails
        its multi, and the single calls take over).
        """
        session = self._session
        fires: dict[str, list[int]] = {}
        for run in runs:
            fires.setdefault(run.job, []).append(run.key)
        known: dict[str, JobNodes] = {}
        for job, keys in fires.items():
            listing = self._written.listing(self._layout.runs(name, job), latch)
            if (
                listing is not None
                and min(keys) > listing.newest
                and listing.children + len(set(keys)) <= retention.limit
            ):
                known[job] = JobNodes([], unlisted=listing.children)
        listed = self._list(name, [job for job in fires if job not in known])
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
        return {**known, **jobs}

    def _relist(
        self,
        name: str,
        runs: Sequence[RunRecord],
        jobs: Mapping[str, JobNodes],
        steps: Sequence[Step],
        latch: LatchNode | None,
    ) -> None:
        """Remember each job directory of a claim batch as the batch left it, if every
        multi of the batch landed under ``latch`` with no other claim running meanwhile;
        forget them if not (``None``)."""
        if latch is None:
            self._written.unlist(dict.fromkeys(self._layout.runs(name, r.job) for r in runs))
            return
        dirs = {job: self._layout.runs(name, job) for job in jobs}
        count = {job: len(read.keys) + read.unlisted for job, read in jobs.items()}
        newest = {job: max(read.keys, default=-1) for job, read in jobs.items()}
        for step in steps:
            run = runs[step.index]
            for op in step.ops:
                count[run.job] += 1 if op.kind == "create" else -1
            newest[run.job] = max(newest[run.job], run.key)
        for job, job_dir in dirs.items():
            before = self._written.listing(job_dir, latch)  # "newest" may err high, not low
            if before is not None:
                newest[job] = max(newest[job], before.newest)
            self._written.listed(job_dir, count[job], newest[job], latch)

    def _run_nodes(
        self,
        runs: Sequence[RunRecord],
        path_of: Callable[[str, int], str],
        state: str | None,
        fence: LatchNode | None,
    ) -> tuple[dict[str, Node], dict[str, LatchNode]]:
        """The run node of each of ``runs``, by path: as this ledger wrote it when the
        path's first run of the batch writes from that (:meth:`~.written.WrittenNodes.recall`
        with ``state`` and ``fence``), else read (the reads sent together).

        Returns:
            The nodes, and the latch node each remembered one was written under.
        """
        session = self._session
        nodes: dict[str, Node] = {}
        fences: dict[str, LatchNode] = {}
        unknown: dict[str, None] = {}
        for run in runs:
            path = path_of(run.job, run.key)
            if path in nodes or path in unknown:
                continue
            recalled = self._written.recall(path, run, state, fence)
            if recalled is None:
                unknown[path] = None
            else:
                nodes[path], fences[path] = recalled
        paths = list(unknown)
        answers = session.gather([partial(session.client.get_async, p) for p in paths], "get")
        nodes.update((path, _node(answer)) for path, answer in zip(paths, answers, strict=True))
        return nodes, fences

    # -- writes --------------------------------------------------------------------------------

    def _commit(
        self,
        lease: Lease | None,
        steps: list[Step],
        runs: Sequence[RunRecord],
        fences: Mapping[str, LatchNode] | None = None,
    ) -> int:
        """Send ``steps`` (of the batch ``runs``) in multis, one chunk at a time, each
        checking ``lease``'s latch node first when there is a lease (then at least one
        multi is sent, with the check alone when there are no steps), and the latch nodes
        ``fences`` names for the paths it writes (runs planned from remembered nodes).
        What landed is remembered (:mod:`~.written`); what a failed multi wrote is not.

        Returns:
            Where the single calls must take over: the batch index of the first run of a
            multi that failed because something moved; the batch's size when all landed.

        Raises:
            LeaseLost: the lease's check failed.
        """
        for chunk in list(chunked(steps)) or [[]]:
            if not self._send(lease, chunk, runs, fences or {}) and chunk:
                self._written.forget(op.path for step in chunk for op in step.ops)
                return chunk[0].index
        return len(runs)

    def _send(
        self,
        lease: Lease | None,
        chunk: Sequence[Step],
        runs: Sequence[RunRecord],
        fences: Mapping[str, LatchNode],
    ) -> bool:
        """One multi of ``chunk``'s operations, after a check of ``lease``'s latch node if
        given and of each other latch node ``fences`` names for its paths; whether every
        operation landed (then what it wrote is remembered)."""
        session = self._session
        transaction = session.client.transaction()
        node = None
        checks: dict[tuple[str, int], None] = {}
        if lease is not None:
            node, deadline = self._leases.fenced(lease)
            checks[(node.path, node.version)] = None
        else:
            deadline = session.begin()
        for step in chunk:
            for op in step.ops:
                fence = fences.get(op.path)
                if fence is not None:
                    checks[(fence.path, fence.version)] = None
        for path, version in checks:
            transaction.check(path, version)
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
        if errors:
            return False
        self._landed(chunk, runs, results[len(checks) :], node)
        return True

    def _landed(
        self,
        chunk: Sequence[Step],
        runs: Sequence[RunRecord],
        results: Sequence[Any],
        fence: LatchNode | None,
    ) -> None:
        """Remember what ``chunk``'s multi wrote (``results``: its operations' answers),
        under ``fence``, the lease's latch node it checked (none for outcomes)."""
        written = self._written
        answers = iter(results)
        for step in chunk:
            run = runs[step.index]
            for op in step.ops:
                answer = next(answers)
                if op.kind == "delete":
                    written.forget([op.path])
                else:
                    version = 0 if op.kind == "create" else int(answer.version)
                    written.wrote(op.path, run, version, fence)


def _node(answer: Any) -> Node:
    """A run node from the answer of ``get``: data and version, or :data:`MISSING`."""
    if isinstance(answer, NoNodeError):
        return MISSING
    raw, stat = answer
    return Node(raw, int(stat.version))


__all__ = ["ZooKeeperBatches"]
