"""The backend under test, as the chaos suite drives it: servers, proxies, raw access.

Each kind gives the replicas a URL (through that replica's own proxy when there is a
network), and gives the fault injectors what they need behind Baton's back: the current
lease holder read raw from the store, a foreign delete of the lease, a server kill and
restart, a ZooKeeper session expiry.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chaos.proxy import Proxy, ProxyLoop

KINDS = ("sqlite", "redis", "zookeeper")


@dataclass(frozen=True, slots=True)
class Holder:
    """The lease holder as the store has it right now."""

    replica: str
    token: int
    session: int = 0  # ZooKeeper: the session owning the latch node


class Target:
    """Base: one backend kind for one chaos run.

    Args:
        workdir: the run's directory.
        cluster: the election name.
    """

    kind = ""
    #: Fault types this backend can take (the rest are skipped, and the report says why).
    faults: tuple[str, ...] = ()

    def __init__(self, workdir: Path, cluster: str) -> None:
        self.workdir = workdir
        self.cluster = cluster
        self.proxies: dict[str, Proxy] = {}

    def start(self) -> None:
        """Start the server (if any)."""

    def url_for(self, replica: str) -> str:
        """The backend URL replica ``replica`` is configured with."""
        raise NotImplementedError

    def holder(self) -> Holder | None:
        """The current lease holder, read raw from the store; None if none or unknown."""
        raise NotImplementedError

    def delete_lease(self) -> bool:
        """Delete the lease behind Baton's back (a foreign client); True if one was there."""
        raise NotImplementedError

    def kill_server(self) -> None:
        raise NotImplementedError

    def restart_server(self) -> None:
        raise NotImplementedError

    def expire_session(self, session: int) -> None:
        raise NotImplementedError

    @property
    def server_pid(self) -> int | None:
        return None

    def heal_all(self) -> None:
        for proxy in self.proxies.values():
            proxy.heal()

    def close(self) -> None:
        """Stop proxies and server; remove the server's files."""


class SqliteTarget(Target):
    """The embedded backend: one file, no server, no network (so no partitions)."""

    kind = "sqlite"
    faults = ("kill_leader", "pause_leader", "foreign_delete", "clock_jump", "clock_skew")

    def __init__(self, workdir: Path, cluster: str) -> None:
        super().__init__(workdir, cluster)
        self.path = workdir / "baton.db"

    def url_for(self, replica: str) -> str:
        return f"sqlite:///{self.path}"

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=2.0, isolation_level=None)

    def holder(self) -> Holder | None:
        # Raw: the row, expired or not (expiry is judged on the replicas' fake clocks).
        try:
            with contextlib.closing(self._db()) as db:
                row = db.execute(
                    "SELECT replica, token FROM lease WHERE name = ?", (self.cluster,)
                ).fetchone()
        except sqlite3.Error:
            return None
        return Holder(str(row[0]), int(row[1])) if row else None

    def delete_lease(self) -> bool:
        with contextlib.closing(self._db()) as db:
            return db.execute("DELETE FROM lease WHERE name = ?", (self.cluster,)).rowcount > 0


class RedisTarget(Target):
    """A redis-server without persistence: a kill -9 loses every key (tokens included)."""

    kind = "redis"
    faults = (
        "kill_leader",
        "pause_leader",
        "backend_restart",
        "partition_blackhole",
        "partition_delay",
        "foreign_delete",
        "clock_jump",
        "clock_skew",
        "skewed_partition",
    )

    def __init__(self, workdir: Path, cluster: str, loop: ProxyLoop) -> None:
        super().__init__(workdir, cluster)
        from tests.harness.redis_server import RedisServer

        self.server = RedisServer()
        self._loop = loop
        self._client: Any = None

    def start(self) -> None:
        self.server.start()
        self._client = self.server.client(timeout=1.0)

    def url_for(self, replica: str) -> str:
        if replica not in self.proxies:
            self.proxies[replica] = Proxy(self._loop, self.server.port)
        return f"redis://127.0.0.1:{self.proxies[replica].port}/0"

    def _keys(self) -> tuple[str, str]:
        return f"baton:{{{self.cluster}}}:lease", f"baton:{{{self.cluster}}}:info"

    def holder(self) -> Holder | None:
        lease, info = self._keys()
        try:
            assert self._client is not None
            pipe = self._client.pipeline(transaction=True)
            pipe.exists(lease)
            pipe.hmget(info, "replica", "token")
            exists, (replica, token) = pipe.execute()
        except Exception:
            return None
        if not exists or replica is None or token is None:
            return None
        return Holder(str(replica), int(token))

    def delete_lease(self) -> bool:
        assert self._client is not None
        return bool(self._client.delete(self._keys()[0]))

    @property
    def server_pid(self) -> int | None:
        return self.server.pid if self.server.running else None

    def kill_server(self) -> None:
        self.server.kill()

    def restart_server(self) -> None:
        self.server.start()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
        self.server.cleanup()


class ZooKeeperTarget(Target):
    """A standalone ZooKeeper (data survives a kill -9: its log is on disk)."""

    kind = "zookeeper"
    faults = (
        "kill_leader",
        "pause_leader",
        "backend_restart",
        "session_expiry",
        "partition_blackhole",
        "partition_delay",
        "foreign_delete",
        "clock_jump",
        "clock_skew",
        "skewed_partition",
    )
    CHROOT = "/baton"

    def __init__(self, workdir: Path, cluster: str, loop: ProxyLoop) -> None:
        super().__init__(workdir, cluster)
        from tests.harness.zookeeper_server import ZooKeeperServer

        self.server = ZooKeeperServer()
        self._loop = loop
        self._client: Any = None

    def start(self) -> None:
        self.server.start()
        self._connect()

    def _connect(self) -> None:
        from kazoo.client import KazooClient

        # The observer's reconnection chatter during server restarts is expected noise.
        logging.getLogger("kazoo.client").setLevel(logging.CRITICAL)
        client = KazooClient(
            hosts=self.server.hosts,
            timeout=5.0,
            connection_retry={"max_tries": -1, "delay": 0.1, "max_delay": 0.5},
        )
        client.start(timeout=10)
        self._client = client

    def url_for(self, replica: str) -> str:
        if replica not in self.proxies:
            self.proxies[replica] = Proxy(self._loop, self.server.port)
        return f"zookeeper://127.0.0.1:{self.proxies[replica].port}{self.CHROOT}"

    def _lowest(self) -> tuple[str, Holder] | None:
        latch = f"{self.CHROOT}/{self.cluster}/latch"
        client = self._client
        assert client is not None
        children = client.get_children(latch)
        for child in sorted(children, key=lambda name: name[-10:]):
            with contextlib.suppress(Exception):
                data, stat = client.get(f"{latch}/{child}")
                replica = json.loads(data or b"{}").get("replica") or ""
                return f"{latch}/{child}", Holder(replica, stat.czxid, stat.ephemeralOwner)
        return None

    def holder(self) -> Holder | None:
        try:
            found = self._lowest()
        except Exception:
            return None
        return found[1] if found else None

    def delete_lease(self) -> bool:
        found = self._lowest()
        if found is None:
            return False
        assert self._client is not None
        self._client.delete(found[0])
        return True

    def expire_session(self, session: int) -> None:
        self.server.expire_session(session)

    @property
    def server_pid(self) -> int | None:
        return self.server.pid if self.server.running else None

    def kill_server(self) -> None:
        self.server.kill()

    def restart_server(self) -> None:
        self.server.start()

    def close(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.stop()
                self._client.close()
        self.server.cleanup()


def make_target(kind: str, workdir: Path, cluster: str, loop: ProxyLoop) -> Target:
    """The target for ``kind`` (one of :data:`KINDS`)."""
    if kind == "sqlite":
        return SqliteTarget(workdir, cluster)
    if kind == "redis":
        return RedisTarget(workdir, cluster, loop)
    if kind == "zookeeper":
        return ZooKeeperTarget(workdir, cluster, loop)
    raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")
