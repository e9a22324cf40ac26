"""The highest fencing token a process has seen, per election name: the *floor* a backend
passes to its next acquisition, so that tokens keep increasing after the store lost data
(Redis without persistence, a restore from an older backup, a promoted PostgreSQL standby)
as long as a live replica saw the last one. Shared by the Redis and PostgreSQL backends."""

from __future__ import annotations

import threading


class TokenFloors:
    """The highest token seen per election name. Thread-safe."""

    def __init__(self) -> None:
        self._floors: dict[str, int] = {}
        self._lock = threading.Lock()

    def floor(self, name: str) -> int:
        """The highest token seen for ``name``; 0 before any."""
        with self._lock:
            return self._floors.get(name, 0)

    def observe(self, name: str, token: int) -> None:
        """Remember ``token`` if it is the highest seen for ``name``."""
        with self._lock:
            if token > self._floors.get(name, 0):
                self._floors[name] = token


__all__ = ["TokenFloors"]
