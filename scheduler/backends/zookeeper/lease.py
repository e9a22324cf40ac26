"""The lease store: a lease is the lowest node of the election's latch.

See the package docstring ("Latch", "Fencing token", "Connection states", "Lease TTL") for
the protocol; :class:`LatchLeases` sends its requests and reports their answers to the
:class:`~scheduler.backends.zookeeper.latch.LeaderLatch`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import BadVersionError, KazooException, NoNodeError, SessionExpiredError

from scheduler.backends.rules import check_ttl, granted
from scheduler.backends.states import LossReason
from scheduler.backends.zookeeper.joining import LatchJoin
from scheduler.backends.zookeeper.latch import (
    DELETED,
    EXPIRED,
    MODIFIED,
    NOT_HOLDER,
    LatchNode,
    LeaderLatch,
    holder_digest,
)
from scheduler.backends.zookeeper.observer import LatchObserver
from scheduler.backends.zookeeper.paths import Layout, sequence
from scheduler.backends.zookeeper.session import Session
from scheduler.backends.zookeeper.watcher import LatchWatcher
from scheduler.clock import Clock
from scheduler.errors import BackendUnavailable, LeaseLost
from scheduler.leadership.lease import Holder, Lease


class LatchLeases(LatchObserver):
    """Acquire, renew, release and watch leases of one session's latch: the whole
    :class:`~scheduler.backends.base.LeaseStore` role (and a
    :class:`~scheduler.backends.base.LeaseNotifier`), ``read`` and ``wait_for_change``
    inherited from :class:`~.observer.LatchObserver`.

    Args:
        session: the session the leases belong to.
        layout: the node paths.
        latch: the state machine of this session's latch nodes.
        watcher: the watches that keep ``latch`` in step with the server.
        clock: the clock lease deadlines and ``since`` stamps are read from.
    """

    def __init__(
        self,
        session: Session,
        layout: Layout,
        latch: LeaderLatch,
        watcher: LatchWatcher,
        clock: Clock,
    ) -> None:
        super().__init__(session, layout, latch, watcher)
        self._clock = clock
        self._join = LatchJoin(session, layout, latch)
        self._ttl_capped = False  # the capping of lease_ttl is logged once

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Join the latch of ``name`` (once per holder) and lead if this node is the lowest.

        A holder whose previous lease from this backend is still in the latch (it was lost,
        or the caller simply asks again) gives that node up first and queues anew, as
        Curator's latch does on reset: a new acquisition always gets a new token.

        Returns:
            The lease, with the czxid of the node as token, when this holder's node is the
            lowest; ``None`` while it waits behind others (it stays queued).

        Raises:
            ValueError: ``ttl`` is not a usable TTL (:func:`~scheduler.backends.rules.check_ttl`).
        """
        check_ttl(ttl)
        sent_at = self._clock.monotonic()
        session = self._session
        latch = self._layout.latch(name)
        with session.errors(f"acquire {name!r}"):
            deadline = session.begin()
            with session.lock:
                node = self._latch.held(name, holder.id)
                pending = self._join.pending(name, holder.id)
            if node is not None and (node.issued or node.lost):
                self._retire(node, deadline)
                node = None
            if node is None and pending is not None:
                node = self._join.adopt(name, holder, pending, deadline)
            if node is None:
                node = self._join.join(name, holder, deadline)
            children = session.children(latch, deadline)
            mine = node.path.rsplit("/", 1)[1]
            children = self._join.sweep(latch, children, mine, deadline)
            if mine not in children:
                # Deleted by someone else (or by an expiry we have not heard of yet): forget
                # it; the next attempt queues again.
                with session.lock:
                    self._latch.drop(node, DELETED)
                return None
            if min(children, key=sequence) != mine or not self._stamp(node, holder):
                return None
        return granted(name, holder, node.token, self._capped_ttl(ttl), sent_at, node.path)

    def renew(self, lease: Lease) -> Lease:
        """Confirm the session is connected and the lease's node exists; move the deadline.

        Raises:
            LeaseLost: the node is gone or rewritten, the session expired, the lease was
                released, or (``on_suspended="lose"``) the connection was suspended.
        """
        sent_at = self._clock.monotonic()
        node = self._owned(lease)
        session = self._session
        with session.errors(f"renew {lease.name!r}"):
            if node is None:
                # Not created here: reading it on the server is the whole verification.
                self._remote(lease, session.begin())
                return lease.renewed(sent_at)
            deadline = self._begin_for(node)
            try:
                stat = session.wait(session.client.exists_async(node.path), deadline, "exists")
            except SessionExpiredError:
                raise self.lost(node, EXPIRED) from None
        if stat is None or stat.czxid != node.token:
            raise self.lost(node, DELETED)
        if stat.version != node.version:
            raise self.lost(node, MODIFIED)
        with session.lock:
            if node.lost:
                raise LeaseLost(lease.name, node.lost)
        return lease.renewed(sent_at)

    def release(self, lease: Lease) -> None:
        """Delete the lease's latch node if this holder still has it; else do nothing.

        Followers watching it are woken by ZooKeeper at once. If the delete cannot be sent
        now, it is sent as soon as the connection is back.
        """
        session = self._session
        with session.lock:
            node = self._latch.tracked(lease.handle)
            if node is None and self._latch.gone(lease.handle) is not None:
                return
            if node is not None and not self._latch.release(node, lease):
                return
        with session.errors(f"release {lease.name!r}"):
            deadline = session.begin()
            version = -1  # our own node: its path is unique to us, whatever its version
            if node is None:
                try:
                    node = self._remote(lease, deadline)
                except LeaseLost:
                    return  # not this holder's (any more): nothing to release
                version = node.version
            self._delete(node.path, version, deadline)

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        """Call ``on_lost(reason)`` once, from a backend thread, when ``lease`` is lost.

        Triggers: the node is deleted or rewritten (a watch on it), the connection is
        suspended (with ``on_suspended="lose"``), the session expires, or the node is missing
        when re-read after a reconnect. Not called after :meth:`release`. Only leases
        acquired through this instance are watched (they belong to its session).
        """
        with self._session.lock:
            node = self._latch.watch(lease, on_lost)
        if node is not None:
            self._watcher.arm(node)

    def fenced(self, lease: Lease) -> tuple[LatchNode, float]:
        """The latch node a write under ``lease`` must check (ours, or read from the
        server), and the call's deadline.

        Raises:
            LeaseLost: the lease is not held.
            BackendUnavailable: suspended, or no session in time.
        """
        local = self._owned(lease)
        if local is None:
            deadline = self._session.begin()
            return self._remote(lease, deadline), deadline
        return local, self._begin_for(local)

    def lost(self, node: LatchNode, reason: LossReason) -> LeaseLost:
        """Lose ``node`` for ``reason``, as a call found; the error to raise."""
        with self._session.lock:
            return self._latch.lost(node, reason)

    def _owned(self, lease: Lease) -> LatchNode | None:
        session = self._session
        with session.lock:
            return self._latch.owned(lease, session.connected, session.started)

    def _begin_for(self, node: LatchNode) -> float:
        """Like :meth:`Session.begin`, for a call acting on ``node``'s lease.

        Nothing is sent while the connection is suspended: kazoo would queue the request
        and send it after a reconnect, long after this call gave up on it.
        """
        session = self._session
        with session.lock:
            connected = session.connected
        if not connected:
            raise BackendUnavailable(
                session.url, "connection suspended: the lease cannot be confirmed now"
            )
        deadline = session.begin()
        with session.lock:
            self._latch.expect_session(node, session.held_id)
        return deadline

    def _stamp(self, node: LatchNode, holder: Holder) -> bool:
        """Issue ``node`` as a lease, and note when it began leading, for observers.

        The note goes to ``<election>/leader`` without waiting for it: it is a write ZooKeeper
        syncs to disk, which would delay every handover by an fsync, and nothing but
        ``read()`` looks at it (claims check the latch node only).
        """
        session = self._session
        with session.lock:
            if not self._latch.won(node, session.connected):
                return False
        note = json.dumps(
            {
                "token": node.token,
                "replica": holder.replica_id,
                "host": holder.host,
                "since": self._clock.now().isoformat(),
            },
            separators=(",", ":"),
        ).encode()
        path = self._layout.leader_note(node.election)

        def written(result: Any) -> None:
            try:
                result.get()
            except NoNodeError:
                session.client.create_async(path, note, acl=session.acl)
            except KazooException:
                pass  # cosmetic: read() falls back to the latch node's creation time

        session.client.set_async(path, note).rawlink(written)
        return True

    def _retire(self, node: LatchNode, deadline: float) -> None:
        """Give up a former lease's node so the holder can queue anew with a new token."""
        with self._session.lock:
            if not self._latch.retire(node):
                return
        self._delete(node.path, -1, deadline)

    def _delete(self, path: str, version: int, deadline: float) -> None:
        session = self._session
        with contextlib.suppress(NoNodeError, BadVersionError):
            session.wait(session.client.delete_async(path, version), deadline, "delete")
        with session.lock:
            self._latch.deleted(path)

    def _remote(self, lease: Lease, deadline: float) -> LatchNode:
        """Verify on the server a lease this instance did not create; one read.

        The node must exist, be the one acquired (its czxid is the token), carry the digest
        of the lease's holder id and be the lowest of the latch (a node that ever was lowest
        stays lowest until it is deleted, so that is what "was issued" means).

        Raises:
            LeaseLost: any of that is not so.
        """
        session = self._session
        latch = self._layout.latch(lease.name)
        if not lease.handle.startswith(f"{latch}/"):
            raise LeaseLost(lease.name, NOT_HOLDER)
        try:
            raw, stat = session.wait(session.client.get_async(lease.handle), deadline, "get")
        except NoNodeError:
            raise LeaseLost(lease.name, DELETED) from None
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if (
            not isinstance(data, dict)
            or data.get("holder") != holder_digest(lease.holder.id)
            or stat.czxid != lease.token
        ):
            raise LeaseLost(lease.name, NOT_HOLDER)
        children = session.children(latch, deadline)
        if not children or min(children, key=sequence) != lease.handle.rsplit("/", 1)[1]:
            raise LeaseLost(lease.name, NOT_HOLDER)
        return LatchNode(
            election=lease.name,
            path=lease.handle,
            holder_id=lease.holder.id,
            token=lease.token,
            version=int(stat.version),
            session=int(stat.ephemeralOwner),
            issued=True,
            local=False,
        )

    def _capped_ttl(self, ttl: float) -> float:
        """``ttl``, capped at the negotiated session timeout (the node lives no longer)."""
        negotiated = self._session.negotiated_timeout
        if negotiated is None or ttl <= negotiated:
            return ttl
        if not self._ttl_capped:
            self._ttl_capped = True
            self._session.log.warning(
                "zookeeper_lease_ttl_capped",
                lease_ttl=ttl,
                session_timeout=negotiated,
                detail="the server granted a shorter session than lease_ttl; "
                "check its maxSessionTimeout",
            )
        return negotiated


__all__ = ["LatchLeases"]
