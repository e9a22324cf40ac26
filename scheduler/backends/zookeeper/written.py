"""Run nodes the ledger wrote itself, and at which version: starts and outcomes need no read.

A batch's ``set_data`` and ``delete`` operations are conditional on a node's version, and
the version was learnt by reading the node just before (one ``get`` per fire, for the start
and again for the outcome). But the ledger wrote most of those nodes itself a moment
earlier: a claim's create leaves version 0, a start's ``set_data`` answers the new version.
:class:`WrittenNodes` keeps, per run node path, what this ledger last stored there (the
attempt and the outcome) and at which version, so the next batch plans from it without a
read.

**Why that keeps every rule.** A plan from a remembered node is only made when it *writes*
(the run's attempt matches, and for a start the node is ``claimed``): a refusal writes
nothing, so nothing would check it, and such runs are read as before. The write is
conditional on the remembered version, and its multi also checks the latch node the node
was written under (the lease that fenced its claim or start): while that latch node is
unchanged, nobody else holds the lease, so no other claim, start or trim touched the job
(they are all fenced), and the only writes of others that remain (an old leader giving back
or recording *its own* attempts) never touch a node of ours. A version is therefore never
confused with one of another incarnation of the path (a node deleted and created again
starts at version 0 again). If anything moved anyway (a session loss, another process, a
node deleted behind us), the multi fails and :mod:`~.batches` sends its runs one by one
through the single calls, which read the current state, as it always did; the entries of a
failed multi are forgotten.

**Bounded.** At most :data:`REMEMBERED` entries (the oldest written is dropped first); an
entry goes as soon as its run's outcome is stored (no later write of ours needs it), or
when the node is deleted (a trim, an unclaim). Each is a path and a small tuple, ~300 bytes:
~6 MiB at the cap.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import NamedTuple

from scheduler.backends.runs import RunRecord
from scheduler.backends.zookeeper.latch import LatchNode
from scheduler.backends.zookeeper.plans import Node

#: The most run nodes remembered: two fires in flight for each of 10,000 jobs. Beyond it
#: the oldest are forgotten, and their starts and outcomes read their nodes as before.
REMEMBERED = 20_000


class Written(NamedTuple):
    """What this ledger last stored in one run node.

    Attributes:
        attempt: the attempt of the record stored.
        outcome: its outcome (``claimed`` or ``running``: finished ones are not kept).
        version: the node's version after the write.
        fence: the latch node whose check fenced the write.
    """

    attempt: str
    outcome: str
    version: int
    fence: LatchNode


class Listing(NamedTuple):
    """What this ledger knows of one job directory's children.

    Attributes:
        children: at most how many children it has (an old leader giving back its own claim
            may have deleted one since: the count only errs high).
        newest: the highest fire key it has, or had (``-1``: none).
        fence: the latch node every claim since the listing checked (only the holder of
            that lease creates children while it is unchanged).
    """

    children: int
    newest: int
    fence: LatchNode


class WrittenNodes:
    """The run nodes this ledger wrote, by path (see the module docstring). Thread-safe.

    Args:
        cap: the most entries kept (:data:`REMEMBERED`).
    """

    def __init__(self, cap: int = REMEMBERED) -> None:
        self._cap = max(0, cap)
        self._entries: OrderedDict[str, Written] = OrderedDict()
        self._listings: OrderedDict[str, Listing] = OrderedDict()
        self._claims = 0  # claims (single or batch) begun so far
        self._claiming = 0  # claims in progress
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def wrote(self, path: str, run: RunRecord, version: int, fence: LatchNode | None) -> None:
        """``run`` was stored at ``path``, now at ``version``, under ``fence``'s check.

        Kept only while the run is unfinished and the write was fenced: an outcome is the
        last write of ours to the node.
        """
        if fence is None or not run.unfinished or not self._cap:
            self.forget([path])
            return
        entry = Written(run.attempt, run.outcome, version, fence)
        with self._lock:
            self._entries[path] = entry
            self._entries.move_to_end(path)
            while len(self._entries) > self._cap:
                self._entries.popitem(last=False)

    def forget(self, paths: Iterable[str]) -> None:
        """Forget ``paths`` (deleted, finished, or written by a multi that failed)."""
        with self._lock:
            for path in paths:
                self._entries.pop(path, None)

    def recall(
        self, path: str, run: RunRecord, state: str | None, fence: LatchNode | None = None
    ) -> tuple[Node, LatchNode] | None:
        """The node at ``path`` as this ledger left it, if a write of ``run`` may be planned
        from it: the same attempt, in ``state`` if given, written under ``fence`` if given
        (else under a latch node still held as far as this process knows).

        Returns:
            The node (its data the attempt and outcome only, all a plan looks at) and the
            latch node the write must check; ``None``: read the node.
        """
        entry = self._entries.get(path)
        if entry is None or entry.attempt != run.attempt or not run.attempt:
            return None
        if state is not None and entry.outcome != state:
            return None
        held = entry.fence
        if fence is not None:
            if (held.path, held.version) != (fence.path, fence.version):
                return None
        elif held.lost is not None or held.released:
            return None
        data = json.dumps({"attempt": entry.attempt, "outcome": entry.outcome}).encode()
        return Node(data, entry.version), held

    def claiming(self) -> int:
        """A claim begins; its ticket for :meth:`alone`."""
        with self._lock:
            self._claims += 1
            self._claiming += 1
            return self._claims if self._claiming == 1 else -1

    def alone(self, ticket: int) -> bool:
        """The claim of ``ticket`` ended; whether no other claim ran at any moment during
        it (only then may what it saw and wrote be remembered as a listing)."""
        with self._lock:
            self._claiming -= 1
            return ticket == self._claims

    def listed(self, job_dir: str, children: int, newest: int, fence: LatchNode) -> None:
        """``job_dir`` has ``children`` children (or fewer), the newest ``newest``, as of a
        claim batch fenced by ``fence`` that landed."""
        entry = Listing(children, newest, fence)
        with self._lock:
            self._listings[job_dir] = entry
            self._listings.move_to_end(job_dir)
            while len(self._listings) > self._cap:
                self._listings.popitem(last=False)

    def listing(self, job_dir: str, fence: LatchNode) -> Listing | None:
        """What :meth:`listed` said of ``job_dir`` under ``fence`` (the same latch node
        and version); ``None``: list it."""
        entry = self._listings.get(job_dir)
        if entry is None or (entry.fence.path, entry.fence.version) != (
            fence.path,
            fence.version,
        ):
            return None
        return entry

    def unlist(self, job_dirs: Iterable[str]) -> None:
        """Forget the listings of ``job_dirs`` (a claim outside a batch, a failed multi)."""
        with self._lock:
            for job_dir in job_dirs:
                self._listings.pop(job_dir, None)


__all__ = ["REMEMBERED", "Listing", "Written", "WrittenNodes"]
