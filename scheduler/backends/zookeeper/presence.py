"""Presence: one ephemeral node per live replica, gone with its session."""

from __future__ import annotations

import contextlib

from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError

from scheduler.backends.zookeeper.paths import Layout, check_segment
from scheduler.backends.zookeeper.session import Session
from scheduler.leadership.members import Member


class ZooKeeperPresence:
    """Members of each election as ephemeral nodes of this session.

    Args:
        session: the session the nodes live as long as.
        layout: the node paths.
    """

    def __init__(self, session: Session, layout: Layout) -> None:
        self._session = session
        self._layout = layout

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Keep ``member``'s presence as an ephemeral node: it lives as long as our session,
        so ``ttl`` is not needed (a dead replica's node goes with its session)."""
        session = self._session
        members_dir = self._layout.members(name)
        check_segment(member.replica_id, "replica_id", "replica id")
        path = f"{members_dir}/{member.replica_id}"
        data = member.to_json().encode()
        client = session.client
        with session.errors("announce"):
            deadline = session.begin()
            session.ensure(members_dir, deadline)
            try:
                session.wait(
                    client.create_async(path, data, acl=session.acl, ephemeral=True),
                    deadline,
                    "create",
                )
                return
            except NodeExistsError:
                pass
            _, stat = session.wait(client.get_async(path), deadline, "get")
            if stat.ephemeralOwner == session.held_id:
                session.wait(client.set_async(path, data, stat.version), deadline, "set")
                return
            # Left by an earlier session of the same replica id: it would vanish with that
            # session while we live on, so take it over.
            with contextlib.suppress(NoNodeError, BadVersionError):
                session.wait(client.delete_async(path, stat.version), deadline, "delete")
            with contextlib.suppress(NodeExistsError):
                session.wait(
                    client.create_async(path, data, acl=session.acl, ephemeral=True),
                    deadline,
                    "create",
                )

    def withdraw(self, name: str, replica_id: str) -> None:
        """Delete ``replica_id``'s presence node."""
        session = self._session
        path = f"{self._layout.members(name)}/{replica_id}"
        with session.errors("withdraw"):
            deadline = session.begin()
            with contextlib.suppress(NoNodeError):
                session.wait(session.client.delete_async(path), deadline, "delete")

    def members(self, name: str) -> list[Member]:
        """Presence nodes of live sessions, by replica id."""
        session = self._session
        members_dir = self._layout.members(name)
        with session.errors("members"):
            deadline = session.begin()
            names = sorted(session.children(members_dir, deadline))
            pending = [session.client.get_async(f"{members_dir}/{n}") for n in names]
            out = []
            for result in pending:
                try:
                    raw, _ = session.wait(result, deadline, "get")
                except NoNodeError:
                    continue  # its session ended meanwhile
                out.append(Member.from_json(raw))
        return out


__all__ = ["ZooKeeperPresence"]
