"""Keeping the latch in step with the server: node watches and connection states.

ZooKeeper tells of a deleted or rewritten node through a watch, and of a dropped or
expired session through a state change; :class:`LatchWatcher` turns both into transitions
of the :class:`~scheduler.backends.zookeeper.latch.LeaderLatch`, re-reads issued nodes
after a reconnect, sends the deletes of doomed nodes, and wakes followers waiting for a
node to go.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from functools import partial
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import EventType, WatchedEvent

from scheduler.backends.states import ConnectionState
from scheduler.backends.zookeeper.latch import LatchNode, LeaderLatch
from scheduler.backends.zookeeper.session import Session


class LatchWatcher:
    """Watches on latch nodes and the session's states, for one latch.

    Args:
        session: the session; its listener is registered here.
        latch: the state machine to drive.
    """

    def __init__(self, session: Session, latch: LeaderLatch) -> None:
        self._session = session
        self._latch = latch
        # Followers waiting for the node at a path to change, woken by its watch.
        self._waiters: dict[str, list[threading.Event]] = {}
        session.add_listener(self._on_state)

    def arm(self, node: LatchNode) -> None:
        """Read ``node`` with a watch: verifies it still exists and is unchanged."""
        session = self._session

        def checked(result: Any) -> None:
            try:
                _, stat = result.get_nowait()
            except NoNodeError:
                with session.lock:
                    self._latch.node_read(node, None, session.held_id)
                return
            except (KazooException, KazooTimeoutError):
                return  # connection trouble: the state listener decides, and re-arms
            with session.lock:
                self._latch.node_read(node, (stat.version, stat.czxid), session.held_id)

        with contextlib.suppress(KazooException):
            session.client.get_async(node.path, watch=self._on_node_event).rawlink(checked)

    def get(self, path: str) -> Any:
        """Read ``path`` with a watch (an async result): a change wakes its waiters."""
        return self._session.client.get_async(path, watch=self._on_node_event)

    @contextlib.contextmanager
    def waking(self, path: str, woken: threading.Event) -> Iterator[None]:
        """Set ``woken`` when the node at ``path`` changes, while inside the block."""
        with self._session.lock:
            self._waiters.setdefault(path, []).append(woken)
        try:
            yield
        finally:
            with self._session.lock:
                if woken in self._waiters.get(path, []):
                    self._waiters[path].remove(woken)
                    if not self._waiters[path]:
                        del self._waiters[path]

    def _on_node_event(self, event: WatchedEvent) -> None:
        """A watch fired; runs on kazoo's callback thread."""
        with self._session.lock:
            waiters = self._waiters.pop(event.path, [])
            if event.type == EventType.DELETED:
                self._latch.node_deleted(event.path)
            elif event.type == EventType.CHANGED:
                self._latch.node_changed(event.path)
        for woken in waiters:
            woken.set()

    def _on_state(self, state: ConnectionState) -> None:
        """A connection state change; runs with the session lock held."""
        if state in (ConnectionState.CONNECTED, ConnectionState.RECONNECTED):
            issued, doomed = self._latch.connected()
            for node in issued:
                self._session.notify(partial(self.arm, node))
            for path in doomed:
                self._session.notify(partial(self._delete_later, path))
        elif state == ConnectionState.SUSPENDED:
            self._latch.suspended()
        elif state == ConnectionState.LOST:
            self._latch.session_lost()

    def _delete_later(self, path: str) -> None:
        """Send the delete of a doomed node, if still doomed and connected."""
        session = self._session
        with session.lock:
            if not self._latch.doomed(path) or not session.connected:
                return

        def done(result: Any) -> None:
            try:
                result.get_nowait()
            except NoNodeError:
                pass  # gone already, which is what we wanted
            except Exception:
                return  # still doomed: retried at the next reconnect or acquire
            with session.lock:
                self._latch.deleted(path)

        with contextlib.suppress(KazooException):
            session.client.delete_async(path).rawlink(done)


__all__ = ["LatchWatcher"]
