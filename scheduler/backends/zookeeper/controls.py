"""Operator controls: one persistent node per control key."""

from __future__ import annotations

import contextlib
from urllib.parse import unquote

from kazoo.exceptions import NodeExistsError, NoNodeError

from scheduler.backends.zookeeper.paths import Layout
from scheduler.backends.zookeeper.session import Session


class ZooKeeperControls:
    """Controls of each election as persistent nodes, percent-encoded by key.

    Args:
        session: the session to read and write through.
        layout: the node paths.
    """

    def __init__(self, session: Session, layout: Layout) -> None:
        self._session = session
        self._layout = layout

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Set or delete the persistent control node of ``key``."""
        session = self._session
        controls_dir = self._layout.controls(name)
        path = self._layout.control(name, key)
        with session.errors("set control"):
            deadline = session.begin()
            if value is None:
                with contextlib.suppress(NoNodeError):
                    session.wait(session.client.delete_async(path), deadline, "delete")
                return
            session.ensure(controls_dir, deadline)
            try:
                session.wait(
                    session.client.create_async(path, value.encode(), acl=session.acl),
                    deadline,
                    "create",
                )
            except NodeExistsError:
                session.wait(session.client.set_async(path, value.encode()), deadline, "set")

    def controls(self, name: str) -> dict[str, str]:
        """Every control node of cluster ``name``."""
        session = self._session
        controls_dir = self._layout.controls(name)
        with session.errors("controls"):
            deadline = session.begin()
            keys = session.children(controls_dir, deadline)
            pending = [(k, session.client.get_async(f"{controls_dir}/{k}")) for k in keys]
            out = {}
            for key, result in pending:
                try:
                    raw, _ = session.wait(result, deadline, "get")
                except NoNodeError:
                    continue
                out[unquote(key)] = raw.decode()
        return out


__all__ = ["ZooKeeperControls"]
