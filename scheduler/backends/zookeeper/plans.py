"""What a batch of claims, starts or outcomes does on ZooKeeper, planned from what was read
just before: pure functions, no I/O (the I/O is :mod:`~.batches`).

A ZooKeeper ``multi`` is all or nothing: one create of a node that exists fails the whole
transaction. Redis's script and SQLite's transaction check run by run and write the runs
that pass; a multi cannot. So the plan replays the single call's rules, run by run and in
order, on a model of each job's run nodes: which runs are answered from a node already
there (a resend gets its own record, another attempt's fire ``None``), which create a node,
which nodes each claim trims (:func:`~scheduler.backends.rules.select_trim` on the model,
as that claim alone would see the history) and at which versions. A fire given twice in a
batch meets, at its second turn, the node its first turn wrote, exactly as a second single
call would. The multi then checks everything the plan assumed (the latch node, and the
version of each node it sets or deletes); if anything moved meanwhile, the multi fails and
:mod:`~.batches` sends the runs from there on one by one.

**Size.** ZooKeeper refuses a request larger than ``jute.maxbuffer`` (1 MiB less one byte
by default) and drops the connection that sent it, which suspends the session (and with
the ``lose`` policy ends the term). :func:`chunked` therefore cuts a batch's operations
into multis of at most :data:`MULTI_BYTES` (a quarter of the default: room for a server
configured lower, and for what :func:`Op.size` does not count exactly) and at most
:data:`MULTI_RUNS` runs; the operations of one run (a claim's create and its trims) always
go in one multi. One claim's trims are at most :data:`~scheduler.backends.rules.TRIM_SCAN`
deletes, ~0.4 MB with long job names, so even a multi of one run stays within the limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from scheduler.backends.base import StartAnswer
from scheduler.backends.rules import TRIM_SCAN, chunks, select_trim, trim_window
from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.states import ClaimRefusal
from scheduler.errors import ClaimLost

#: The most bytes one multi of a batch carries (requests are refused above
#: ``jute.maxbuffer``, 1 MiB by default; see the module docstring).
MULTI_BYTES = 256 * 1024
#: The most runs one multi of a batch carries. ZooKeeper answers a session's requests in
#: the order they were sent, so a renewal sent during a batch waits for the multi before
#: it: 500 run nodes are committed in a few milliseconds.
MULTI_RUNS = 500
#: Bytes counted per operation besides its path and data: the request header, the
#: version, and the ACL a create carries (a digest ACL is ~60 bytes).
OP_OVERHEAD = 160


def refusal(raw: bytes | None, run: RunRecord, state: str | None = None) -> ClaimRefusal | None:
    """Why the stored run node ``raw`` is not ``run.attempt``'s (in ``state``, if given);
    ``None`` when it is."""
    if raw is None:
        return ClaimRefusal.GONE
    try:
        stored = json.loads(raw)
    except ValueError:
        stored = None
    if not isinstance(stored, dict) or not run.attempt or stored.get("attempt") != run.attempt:
        return ClaimRefusal.OTHER_ATTEMPT
    if state is not None and stored.get("outcome") != state:
        return ClaimRefusal.NOT_CLAIMED
    return None


def outcome_of(raw: bytes) -> str | None:
    """The outcome stored in the run node ``raw``; ``None`` when it cannot be read."""
    try:
        stored = json.loads(raw)
    except ValueError:
        return None
    outcome = stored.get("outcome") if isinstance(stored, dict) else None
    return outcome if isinstance(outcome, str) else None


@dataclass(frozen=True, slots=True)
class Node:
    """A run node as read: its data and version; ``data`` is ``None`` when it is missing."""

    data: bytes | None
    version: int = -1


#: A missing node.
MISSING = Node(None)


@dataclass(frozen=True, slots=True)
class Op:
    """One operation of a multi: ``create`` (with ``data``), ``set`` (``data`` at
    ``version``) or ``delete`` (at ``version``)."""

    kind: Literal["create", "set", "delete"]
    path: str
    data: bytes = b""
    version: int = -1

    def size(self) -> int:
        """Roughly the bytes it takes in the request (never less)."""
        return len(self.path.encode()) + len(self.data) + OP_OVERHEAD


@dataclass(frozen=True, slots=True)
class Step:
    """One run's part of a batch.

    Attributes:
        index: the run's place in the batch.
        ops: what it writes (none when its answer comes from what was read).
    """

    index: int
    ops: tuple[Op, ...]

    def size(self) -> int:
        return sum(op.size() for op in self.ops)


@dataclass(slots=True)
class JobNodes:
    """What was read of one job's run nodes before a batch of claims.

    Attributes:
        keys: the fire keys of its run nodes (the directory's children).
        nodes: the nodes read: the trim candidates and the batch's own fires that exist
            (a key listed but gone when read is :data:`MISSING`).
        unlisted: children not listed, known to be older than every fire of the batch and
            few enough that none of its claims trims (at most this many: see
            :class:`~.written.Listing`); ``keys`` is then empty.
    """

    keys: list[int]
    nodes: dict[int, Node] = field(default_factory=dict)
    unlisted: int = 0


def trim_reads(keys: Sequence[int], fires: Sequence[int], retention: Retention) -> list[int]:
    """The existing fire keys whose outcomes the claims of ``fires`` (one job's runs in a
    batch) may need to decide their trims: a superset of every window those claims see.

    Each claim's window of candidates is a prefix of the job's keys below its cutoff, at
    most :data:`~scheduler.backends.rules.TRIM_SCAN` long; the records the batch trimmed
    before it and the ones it added shift that prefix by no more than they count. So the
    ``i``-th claim looks no further than the first ``min(len(keys) + i - limit, TRIM_SCAN
    * i)`` keys, and one claim no further than today's single claim reads.

    Args:
        keys: the job's existing fire keys, sorted.
        fires: the fire keys the batch claims for the job.
        retention: the batch's retention.
    """
    if not fires:
        return []
    count = min(len(keys) + len(fires) - max(retention.limit, 0), TRIM_SCAN * len(fires))
    cutoff = max(fires) - round(retention.protect * 1000)
    return [key for key in keys[: max(count, 0)] if key < cutoff]


def plan_claims(
    runs: Sequence[RunRecord],
    retention: Retention,
    jobs: Mapping[str, JobNodes],
    path_of: Callable[[str, int], str],
) -> tuple[list[RunRecord | None], list[Step]]:
    """Replay :meth:`~scheduler.backends.base.RunLedger.claim` for each of ``runs`` in
    order, on the nodes read (``jobs``, by job name; every job of ``runs`` is there).

    Args:
        runs: the batch.
        retention: the batch's retention.
        jobs: each job's fire keys, and the nodes read (:func:`trim_reads` and the batch's
            fires that exist).
        path_of: the run node path of (job, fire key).

    Returns:
        Each run's answer, and the steps of the runs that write (a create, and the
        deletes of its trims at the versions read), in order.
    """
    outcomes: dict[str, dict[int, str | None]] = {}
    for job, read in jobs.items():
        known = dict.fromkeys(read.keys)  # unread: None, never trimmed (see trim_reads)
        for key, node in read.nodes.items():
            if node.data is None:
                known.pop(key, None)
            else:
                known[key] = outcome_of(node.data)
        outcomes[job] = known
    answers: list[RunRecord | None] = []
    steps: list[Step] = []
    for index, run in enumerate(runs):
        read = jobs[run.job]
        model, nodes = outcomes[run.job], read.nodes
        if run.key in model:
            stored = nodes[run.key].data
            if stored is not None and refusal(stored, run) is None:
                answers.append(RunRecord.from_json(stored))  # a resend: its own record
            else:
                answers.append(None)
            continue
        if read.unlisted:
            records = len(model) + read.unlisted + 1
            if trim_window(records, run.key, retention).count > 0:
                raise ValueError(f"{run.job!r}: a trim is due, its history must be listed")
            victims = []
        else:
            victims = select_trim(model, run.key, retention, TRIM_SCAN)
        data = run.to_json().encode()
        ops = [Op("create", path_of(run.job, run.key), data)]
        for key in victims:
            ops.append(Op("delete", path_of(run.job, key), version=nodes[key].version))
            del model[key]
            nodes[key] = MISSING
        model[run.key] = run.outcome
        nodes[run.key] = Node(data, 0)
        steps.append(Step(index, tuple(ops)))
        answers.append(run)
    return answers, steps


def plan_starts(
    runs: Sequence[RunRecord], nodes: dict[str, Node], path_of: Callable[[str, int], str]
) -> tuple[list[StartAnswer], list[Step]]:
    """Replay :meth:`~scheduler.backends.base.RunLedger.start` for each of ``runs`` in
    order, on the run nodes read (``nodes``, by path; updated as the plan writes).

    Returns:
        Each run's answer (the run, or the :class:`ClaimLost` ``start`` would raise), and
        the steps of the runs that write (a set at the version read), in order.
    """
    answers: list[StartAnswer] = []
    steps: list[Step] = []
    for index, run in enumerate(runs):
        path = path_of(run.job, run.key)
        node = nodes.get(path, MISSING)
        refused = refusal(node.data, run, "claimed")
        if refused is not None:
            answers.append(ClaimLost(run.job, run.scheduled_time.isoformat(), refused))
            continue
        data = run.to_json().encode()
        steps.append(Step(index, (Op("set", path, data, node.version),)))
        nodes[path] = Node(data, node.version + 1)
        answers.append(run)
    return answers, steps


def plan_finishes(
    runs: Sequence[RunRecord], nodes: dict[str, Node], path_of: Callable[[str, int], str]
) -> list[Step]:
    """Replay :meth:`~scheduler.backends.base.RunLedger.finish` for each of ``runs`` in
    order, on the run nodes read (``nodes``, by path; updated as the plan writes).

    Returns:
        The steps of the runs that write (a set at the version read), in order; a run whose
        node is missing or another attempt's writes nothing.
    """
    steps: list[Step] = []
    for index, run in enumerate(runs):
        path = path_of(run.job, run.key)
        node = nodes.get(path, MISSING)
        if node.data is None or refusal(node.data, run) is not None:
            continue
        data = run.to_json().encode()
        steps.append(Step(index, (Op("set", path, data, node.version),)))
        nodes[path] = Node(data, node.version + 1)
    return steps


def chunked(steps: Sequence[Step]) -> Iterator[Sequence[Step]]:
    """``steps`` in multis of at most :data:`MULTI_RUNS` runs and :data:`MULTI_BYTES`."""
    return chunks(steps, MULTI_RUNS, Step.size, MULTI_BYTES)


__all__ = [
    "MISSING",
    "MULTI_BYTES",
    "MULTI_RUNS",
    "OP_OVERHEAD",
    "JobNodes",
    "Node",
    "Op",
    "Step",
    "chunked",
    "outcome_of",
    "plan_claims",
    "plan_finishes",
    "plan_starts",
    "refusal",
    "trim_reads",
]
