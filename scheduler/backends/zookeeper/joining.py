"""Joining the latch with protected creates (Curator's "protected" mode).

A latch node's name begins with a fresh GUID, so a create whose reply was lost is found by
the next attempt and adopted instead of lingering as an orphan ahead of everyone; a create
given up on without finding its node is a *stray* until its session ends: if it lands
later, its node is deleted at the next acquisition, or once lowest it blocks the election.
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

from kazoo.exceptions import NoNodeError

from scheduler.backends.states import ConnectionState
from scheduler.backends.zookeeper.latch import LatchNode, LeaderLatch, node_data
from scheduler.backends.zookeeper.paths import LATCH_MARK, Layout, guid_of
from scheduler.backends.zookeeper.session import Session
from scheduler.leadership.lease import Holder


class LatchJoin:
    """Creates and adopts this session's latch nodes; remembers creates in doubt.

    Args:
        session: the session the nodes belong to.
        layout: the node paths.
        latch: the state machine the created nodes are tracked in.
    """

    def __init__(self, session: Session, layout: Layout, latch: LeaderLatch) -> None:
        self._session = session
        self._layout = layout
        self._latch = latch
        # GUIDs of creates sent whose answer has not come back yet, by (election, holder).
        self._pending: dict[tuple[str, str], str] = {}
        # GUIDs of creates given up on without finding their node: the create may still land
        # later, and such a node must be deleted, or once lowest it blocks the election.
        self._strays: set[str] = set()
        session.add_listener(self._on_state)

    def pending(self, name: str, holder_id: str) -> str | None:
        """The GUID of ``holder_id``'s create in doubt, if any (call with the lock held)."""
        return self._pending.get((name, holder_id))

    def join(self, name: str, holder: Holder, deadline: float) -> LatchNode:
        """Create ``holder``'s latch node (a protected, ephemeral sequential node)."""
        latch = self._layout.latch(name)
        guid = uuid.uuid4().hex
        data = node_data(holder)
        session = self._session
        with session.lock:
            self._pending[(name, holder.id)] = guid
        for attempt in range(2):
            try:
                path, stat = session.wait(
                    session.client.create_async(
                        f"{latch}/{guid}{LATCH_MARK}",
                        data,
                        acl=session.acl,
                        ephemeral=True,
                        sequence=True,
                        include_data=True,
                    ),
                    deadline,
                    "create",
                )
            except NoNodeError:
                if attempt:
                    raise
                session.forget(latch)
                session.ensure(latch, deadline)
                continue
            break
        return self._track(name, holder, str(path), stat)

    def adopt(self, name: str, holder: Holder, guid: str, deadline: float) -> LatchNode | None:
        """Find the node of an earlier create whose answer was lost, by its GUID."""
        latch = self._layout.latch(name)
        session = self._session
        with session.lock:
            self._pending.pop((name, holder.id), None)
            # A stray until found: this look-up may fail too, and the create may land later.
            self._strays.add(guid)
            owner = session.held_id
        for child in session.children(latch, deadline):
            if child.startswith(guid):
                path = f"{latch}/{child}"
                stat = session.wait(session.client.exists_async(path), deadline, "exists")
                if stat is not None and stat.ephemeralOwner == owner:
                    with session.lock:
                        self._strays.discard(guid)
                    return self._track(name, holder, path, stat)
        return None

    def sweep(self, latch: str, children: list[str], mine: str, deadline: float) -> list[str]:
        """Delete latch nodes of our own creates that landed after we gave up on them;
        return ``children`` without them."""
        session = self._session
        with session.lock:
            if not self._strays:
                return children
            found = [c for c in children if c != mine and guid_of(c) in self._strays]
        for child in found:
            session.log.warning("zookeeper_stray_latch_node_deleted", node=f"{latch}/{child}")
            with contextlib.suppress(NoNodeError):
                session.wait(session.client.delete_async(f"{latch}/{child}"), deadline, "delete")
            with session.lock:
                self._strays.discard(guid_of(child))
        return [c for c in children if c not in found]

    def _track(self, name: str, holder: Holder, path: str, stat: Any) -> LatchNode:
        with self._session.lock:
            self._pending.pop((name, holder.id), None)
            return self._latch.joined(
                name,
                holder.id,
                path,
                token=int(stat.czxid),
                version=int(stat.version),
                session=int(stat.ephemeralOwner),
            )

    def _on_state(self, state: ConnectionState) -> None:
        if state == ConnectionState.LOST:
            self._pending.clear()
            self._strays.clear()  # their nodes, if any, ended with the session


__all__ = ["LatchJoin"]
