"""The leader latch's state machine: which latch nodes are ours, and what became of them.

Curator's ``LeaderLatch`` without the I/O (the package docstring, "Latch" and "Connection
states", tells the protocol). :class:`LeaderLatch` records each node this session created
and moves it through its states on the events the I/O around it reports::

    joined --won--> issued --(suspended, policy lose)-------------> lost: connection-suspended
      |               |----(node deleted / rewritten on the server)--> lost: node-deleted/-modified
      |               |----(session lost)--------------------------> lost: session-expired
      |               '----release / retire ---------------------> released (node doomed)
      '--(not the lowest: stays queued; found missing: forgotten)

A lost or released node stays tracked (or remembered, with its reason) so that a late
renew, claim or watch can say why; a node that must still be deleted on the server is
*doomed* until the delete is confirmed (it is sent again at every reconnect). The machine
sends nothing and starts no thread: it is not thread-safe on its own, and every method is
called with the session lock held. Loss notices (``on_lost``) are handed to ``notify``.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from scheduler.backends.states import LossReason
from scheduler.backends.zookeeper.settings import OnSuspended
from scheduler.errors import LeaseLost
from scheduler.leadership.lease import Holder, Lease

# The reasons a lease of this backend is lost (LeaseLost.reason, on_lost(reason)).
SUSPENDED = LossReason.CONNECTION_SUSPENDED
EXPIRED = LossReason.SESSION_EXPIRED
DELETED = LossReason.NODE_DELETED
MODIFIED = LossReason.NODE_MODIFIED
RELEASED = LossReason.RELEASED
NOT_HOLDER = LossReason.NOT_HOLDER

# How many lost-lease reasons to remember, so a late renew/claim can say why.
_GONE_MEMORY = 1024


def holder_digest(holder_id: str) -> str:
    """What a latch node stores of its holder's id."""
    # The holder id is the secret that lets a holder renew and release; the node stores its
    # digest so that anyone allowed to read the latch cannot learn it.
    return hashlib.sha256(holder_id.encode()).hexdigest()


def node_data(holder: Holder, since: datetime | None = None) -> bytes:
    """The data of ``holder``'s latch node (see :mod:`~scheduler.backends.zookeeper.paths`)."""
    return json.dumps(
        {
            "holder": holder_digest(holder.id),
            "replica": holder.replica_id,
            "host": holder.host,
            "since": since.isoformat() if since is not None else None,
        },
        separators=(",", ":"),
    ).encode()


@dataclass(eq=False, slots=True)
class LatchNode:
    """A latch node and its state; guarded by the session lock.

    Attributes:
        election: the election name.
        path: the node's full path (the lease's handle).
        holder_id: the holder that queued it.
        token: its czxid, the fencing token of a lease it grants.
        version: its data version when created (or read).
        session: the id of the session that owns it.
        issued: granted as a lease (it was the lowest).
        lost: why its lease is lost; ``None`` while held.
        released: given up by its holder; no ``on_lost`` after that.
        on_lost: the watcher of its lease, called once.
        notified: ``on_lost`` was handed over.
        local: created by this instance; ``False`` for a node of another instance,
            verified on the server for one call.
    """

    election: str
    path: str
    holder_id: str
    token: int
    version: int
    session: int
    issued: bool = False
    lost: LossReason | None = None
    released: bool = False
    on_lost: Callable[[str], None] | None = None
    notified: bool = False
    local: bool = True

    def grants(self, lease: Lease) -> bool:
        """Whether ``lease`` (holder and token) is this node's."""
        return self.holder_id == lease.holder.id and self.token == lease.token


class LeaderLatch:
    """The latch nodes of one session, and their transitions.

    Args:
        on_suspended: the policy for issued leases when the connection drops.
        notify: runs a loss notice later, on another thread (never under the lock).
    """

    def __init__(
        self, on_suspended: OnSuspended, notify: Callable[[Callable[[], None]], None]
    ) -> None:
        self.on_suspended = on_suspended
        self._notify = notify
        self._nodes: dict[str, LatchNode] = {}
        self._mine: dict[tuple[str, str], LatchNode] = {}
        self._doomed: set[str] = set()
        self._gone: OrderedDict[str, LossReason] = OrderedDict()

    # --- what is known ---------------------------------------------------------------------

    def held(self, name: str, holder_id: str) -> LatchNode | None:
        """``holder_id``'s node in election ``name``, if it has one."""
        return self._mine.get((name, holder_id))

    def tracked(self, path: str) -> LatchNode | None:
        return self._nodes.get(path)

    def gone(self, path: str) -> LossReason | None:
        """Why the node at ``path`` is no longer tracked, if it was."""
        return self._gone.get(path)

    def queued(self, name: str) -> list[str]:
        """Names of our nodes in election ``name`` that wait for their turn."""
        return [
            n.path.rsplit("/", 1)[1]
            for n in self._nodes.values()
            if n.election == name and not n.issued and not n.lost
        ]

    def doomed(self, path: str) -> bool:
        """Whether the node at ``path`` must still be deleted on the server."""
        return path in self._doomed

    # --- acquiring -------------------------------------------------------------------------

    def joined(
        self, name: str, holder_id: str, path: str, token: int, version: int, session: int
    ) -> LatchNode:
        """Track the node ``holder_id`` just created (or found) in the latch of ``name``."""
        node = LatchNode(name, path, holder_id, token, version, session)
        self._nodes[path] = node
        self._mine[(name, holder_id)] = node
        return node

    def won(self, node: LatchNode, connected: bool) -> bool:
        """``node`` is the lowest: issue it as a lease, unless lost meanwhile.

        Suspended while winning, with the ``lose`` policy, it is lost at once (the state
        change only saw the nodes issued before it) and doomed.

        Returns:
            Whether the lease is issued.
        """
        if node.lost:
            return False
        node.issued = True
        if not connected and self.on_suspended == "lose":
            self.lose(node, SUSPENDED)
            self._doomed.add(node.path)
            return False
        return True

    def owned(self, lease: Lease, connected: bool, started: bool) -> LatchNode | None:
        """This session's node of ``lease``, still held.

        Returns:
            The node; ``None`` for a lease this instance did not create (another instance,
            or another process, acquired it): it must be verified on the server.

        Raises:
            LeaseLost: the node was lost, released, is another holder's, or (policy
                ``lose``) the connection is suspended now.
        """
        node = self._nodes.get(lease.handle)
        if node is None:
            reason = self._gone.get(lease.handle)
            if reason is not None:
                raise LeaseLost(lease.name, reason)
            return None
        if not node.issued or not node.grants(lease):
            raise LeaseLost(lease.name, NOT_HOLDER)
        if node.lost:
            raise LeaseLost(lease.name, node.lost)
        if not connected and self.on_suspended == "lose" and started:
            # The state listener may not have run yet; the policy is the same.
            self.lose(node, SUSPENDED)
            raise LeaseLost(lease.name, SUSPENDED)
        return node

    def expect_session(self, node: LatchNode, session: int | None) -> None:
        """Refuse ``node`` if its session is not ``session`` (it expired unnoticed).

        Raises:
            LeaseLost: reason ``session-expired``.
        """
        if node.local and node.session != session:
            self.lose(node, EXPIRED)
            raise LeaseLost(node.election, EXPIRED)

    # --- giving up -------------------------------------------------------------------------

    def release(self, node: LatchNode, lease: Lease) -> bool:
        """``lease``'s holder gives ``node`` up; no ``on_lost`` after this.

        Returns:
            Whether the node must be deleted on the server (it is then doomed); ``False``
            when it is another holder's or went with its session.
        """
        if not node.grants(lease):
            return False
        node.released = True
        self.drop(node, RELEASED)
        if node.lost == EXPIRED:
            return False  # gone with its session
        self._doomed.add(node.path)
        return True

    def retire(self, node: LatchNode) -> bool:
        """Give up a former lease's node so its holder can queue anew with a new token.

        Returns:
            Whether the node must be deleted on the server (it is then doomed).
        """
        self.drop(node, node.lost or RELEASED)
        node.released = True
        if node.lost == EXPIRED:
            return False
        self._doomed.add(node.path)
        return True

    def deleted(self, path: str) -> None:
        """The node at ``path`` is deleted on the server (or was already gone)."""
        self._doomed.discard(path)

    # --- losing ----------------------------------------------------------------------------

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> LatchNode | None:
        """Call ``on_lost(reason)`` once when ``lease`` is lost.

        Returns:
            The node to watch on the server; ``None`` when there is nothing to watch (lost
            already, and told so now unless released; or not this instance's lease).
        """
        node = self._nodes.get(lease.handle)
        if node is None or not node.grants(lease):
            # Lost already (and not released): say so now. A lease another instance
            # acquired is not watched here; renewals find its loss.
            reason = self._gone.get(lease.handle) if node is None else NOT_HOLDER
            if reason is not None and reason != RELEASED:
                self._notify(lambda: on_lost(reason))
            return None
        node.on_lost = on_lost
        if node.lost:
            self._tell(node)
            return None
        return node

    def lose(self, node: LatchNode, reason: LossReason) -> None:
        """Mark ``node``'s lease lost for ``reason`` (the first reason stays) and tell."""
        if node.lost:
            return
        node.lost = reason
        self._tell(node)

    def lost(self, node: LatchNode, reason: LossReason) -> LeaseLost:
        """Lose ``node`` for ``reason``, as found by a call; the error to raise."""
        self.lose(node, reason)
        if reason in (DELETED, EXPIRED):
            self.drop(node, reason)
        return LeaseLost(node.election, node.lost or reason)

    def drop(self, node: LatchNode, reason: LossReason) -> None:
        """Stop tracking ``node``; remember why, for a late renew or claim."""
        self._nodes.pop(node.path, None)
        key = (node.election, node.holder_id)
        if self._mine.get(key) is node:
            del self._mine[key]
        self._gone[node.path] = reason
        while len(self._gone) > _GONE_MEMORY:
            self._gone.popitem(last=False)

    def node_deleted(self, path: str) -> None:
        """A watch saw the node at ``path`` deleted."""
        node = self._nodes.get(path)
        if node is not None and node.issued and not node.lost:
            self.lose(node, DELETED)
            self.drop(node, DELETED)

    def node_changed(self, path: str) -> None:
        """A watch saw the node at ``path`` rewritten."""
        node = self._nodes.get(path)
        if node is not None and node.issued and not node.lost:
            self.lose(node, MODIFIED)

    def node_read(
        self, node: LatchNode, found: tuple[int, int] | None, session: int | None
    ) -> None:
        """A re-read of ``node`` answered: ``found`` is its (version, czxid), or ``None``
        when it is missing; ``session`` is the session id now."""
        if found is None:
            if node.session == session:
                self.lose(node, DELETED)
        elif found != (node.version, node.token):
            self.lose(node, MODIFIED)

    # --- connection states -----------------------------------------------------------------

    def connected(self) -> tuple[list[LatchNode], list[str]]:
        """The connection is back (same or new session).

        Returns:
            The issued nodes to read again (and watch) before they may fire, and the paths
            of doomed nodes to delete now.
        """
        issued = [n for n in self._nodes.values() if n.issued and not n.lost]
        return issued, list(self._doomed)

    def suspended(self) -> None:
        """The connection dropped: with the ``lose`` policy every issued lease is lost and
        its node doomed (deleted at the reconnect, so the next in line takes over)."""
        if self.on_suspended != "lose":
            return
        for node in list(self._nodes.values()):
            if node.issued and not node.lost:
                self.lose(node, SUSPENDED)
                self._doomed.add(node.path)

    def session_lost(self) -> None:
        """The session is gone: so is every node it owned."""
        for node in list(self._nodes.values()):
            self.lose(node, EXPIRED)
            self.drop(node, EXPIRED)
        self._doomed.clear()

    def _tell(self, node: LatchNode) -> None:
        """Hand ``node``'s loss to its watcher, once, unless it was released."""
        callback, reason = node.on_lost, node.lost
        if callback is None or reason is None or node.notified or node.released:
            return
        node.notified = True
        self._notify(lambda: callback(reason))


__all__ = [
    "DELETED",
    "EXPIRED",
    "MODIFIED",
    "NOT_HOLDER",
    "RELEASED",
    "SUSPENDED",
    "LatchNode",
    "LeaderLatch",
    "holder_digest",
    "node_data",
]
