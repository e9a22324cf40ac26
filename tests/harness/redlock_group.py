"""N independent ``redis-server`` processes on loopback: one Redlock group.

Each primary is a :class:`~tests.harness.redis_server.RedisServer` (no persistence: a
``kill`` followed by a ``restart`` is a primary that lost its data) or, with
``persistent=True``, an :class:`~tests.harness.redis_server.AofServer` with
``appendfsync always``. They know nothing of each other, as Redlock wants.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import suppress
from typing import Self

from tests.harness.redis_server import HOST, AofServer, RedisServer


class RedlockGroup:
    """``count`` primaries for one ``redlock://`` URL.

    Args:
        count: how many primaries (3 or 5 for a valid URL; any number for bad-URL tests).
        persistent: AOF with ``appendfsync always`` on every primary.
        password: ``requirepass`` on every primary.
    """

    def __init__(self, count: int = 3, persistent: bool = False, password: str | None = None):
        self.primaries: list[RedisServer] = [
            AofServer("always", password=password) if persistent else RedisServer(password=password)
            for _ in range(count)
        ]
        self.password = password

    def start(self) -> Self:
        """Start every primary (and wait until each answers)."""
        try:
            for primary in self.primaries:
                primary.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def url(self, ports: Sequence[int] | None = None, db: int = 0) -> str:
        """``redlock://[:password@]127.0.0.1:p1,...,127.0.0.1:pN/db``; ``ports`` instead of
        the primaries' own (a proxy in front of each, say)."""
        auth = f":{self.password}@" if self.password else ""
        chosen = ports if ports is not None else [p.port for p in self.primaries]
        return f"redlock://{auth}{','.join(f'{HOST}:{port}' for port in chosen)}/{db}"

    def __iter__(self) -> Iterator[RedisServer]:
        return iter(self.primaries)

    def __len__(self) -> int:
        return len(self.primaries)

    def __getitem__(self, index: int) -> RedisServer:
        return self.primaries[index]

    def heal(self) -> None:
        """Start every primary that is not running (after a test killed one)."""
        for primary in self.primaries:
            if not primary.running:
                primary.start()

    def cleanup(self) -> None:
        """Stop every primary and remove its directory."""
        for primary in self.primaries:
            with suppress(Exception):
                primary.cleanup()


__all__ = ["RedlockGroup"]
