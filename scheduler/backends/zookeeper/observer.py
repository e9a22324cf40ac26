"""Watching the latch from outside: who leads, and waiting for a node ahead to go."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

from kazoo.exceptions import NoNodeError

from scheduler.backends.zookeeper.latch import LeaderLatch
from scheduler.backends.zookeeper.paths import Layout, sequence
from scheduler.backends.zookeeper.session import Session
from scheduler.backends.zookeeper.watcher import LatchWatcher
from scheduler.errors import BackendError, BackendUnavailable
from scheduler.leadership.lease import LeaseRecord


class LatchObserver:
    """Reads the latch's leader and waits for changes ahead of this session's nodes.

    Args:
        session: the session to read through.
        layout: the node paths.
        latch: this session's latch nodes (a participant waits behind its own node).
        watcher: where node watches are registered and their waiters woken.
    """

    def __init__(
        self, session: Session, layout: Layout, latch: LeaderLatch, watcher: LatchWatcher
    ) -> None:
        self._session = session
        self._layout = layout
        self._latch = latch
        self._watcher = watcher

    def read(self, name: str) -> LeaseRecord | None:
        """The owner of the lowest latch node of ``name``, without joining the latch.

        ``ttl_left`` is ``None``: the node lives as long as its owner's session.
        """
        session = self._session
        latch = self._layout.latch(name)
        with session.errors(f"read {name!r}"):
            deadline = session.begin()
            for _ in range(3):  # the lowest node may go between listing and reading it
                children = session.children(latch, deadline)
                if not children:
                    return None
                lowest = min(children, key=sequence)
                note = session.client.get_async(self._layout.leader_note(name))
                try:
                    raw, stat = session.wait(
                        session.client.get_async(f"{latch}/{lowest}"), deadline, "get"
                    )
                except NoNodeError:
                    continue
                try:
                    noted, _ = session.wait(note, deadline, "get")
                except NoNodeError:
                    noted = b""
                return _record(name, raw, stat, noted)
        raise BackendUnavailable(session.url, f"the latch of {name!r} kept changing under a read")

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` s; return as soon as the watched latch node is deleted.

        A participant watches the predecessor of its own queued node, an observer the
        leader's node. Returns at once when there is nothing to wait behind (the latch is
        empty, or our node is already the lowest), and early on any connection state
        change. Backend errors are not raised: the wait runs out its time instead, and the
        caller's next call reports them. Real time is used: this is a wait on the network.
        """
        session = self._session
        end = time.monotonic() + max(0.0, timeout)
        woken = threading.Event()
        try:
            with session.errors(f"wait on {name!r}"):
                deadline = session.begin(limit=end)
                target = self._ahead(name, deadline)
                if target is None:
                    return
                with self._watcher.waking(target, woken), session.waking(woken):
                    try:
                        session.wait(self._watcher.get(target), deadline, "get")
                    except NoNodeError:
                        return
                    woken.wait(max(0.0, end - time.monotonic()))
        except BackendError:
            with session.lock:
                session.lock.wait_for(lambda: session.closed, max(0.0, end - time.monotonic()))

    def _ahead(self, name: str, deadline: float) -> str | None:
        """The latch node to wait behind: our first queued node's predecessor, or (not
        taking part) the leader's; ``None`` when there is none."""
        latch = self._layout.latch(name)
        ordered = sorted(self._session.children(latch, deadline), key=sequence)
        with self._session.lock:
            queued = set(self._latch.queued(name))
        ours = [c for c in ordered if c in queued]
        if ours:
            index = ordered.index(ours[0])
            return None if index == 0 else f"{latch}/{ordered[index - 1]}"
        return f"{latch}/{ordered[0]}" if ordered else None


def _record(name: str, raw: bytes, stat: Any, noted: bytes = b"") -> LeaseRecord:
    """The lease record of a latch node (``raw``, ``stat``) and the leader's note."""
    try:
        data = json.loads(raw)
        note = json.loads(noted) if noted else {}
    except ValueError:
        data, note = {}, {}
    if not isinstance(data, dict):
        data = {}
    if isinstance(note, dict) and note.get("token") == int(stat.czxid):
        data["since"] = note.get("since")  # the leader's own note of when it began
    since_text = data.get("since")
    since = (
        datetime.fromisoformat(since_text)
        if isinstance(since_text, str)
        else datetime.fromtimestamp(stat.ctime / 1000, UTC)
    )
    return LeaseRecord(
        name=name,
        replica_id=str(data.get("replica", "")),
        host=str(data.get("host", "")),
        token=int(stat.czxid),
        since=since,
        ttl_left=None,
    )


__all__ = ["LatchObserver"]
