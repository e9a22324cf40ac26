"""The backend under test, as the chaos suite drives it: servers, proxies, raw access.

Each kind gives the replicas a URL (through that replica's own proxy when there is a
network; PostgreSQL: one proxy per server), and gives the fault injectors what they need
behind Baton's back: the current lease holder read raw from the store, a foreign delete of
the lease, a server kill and restart, a ZooKeeper session expiry, PostgreSQL's
``pg_terminate_backend`` and a standby promotion, a Sentinel failover, a kill -9 of a
Redis primary, a replication link held, a Redis Cluster shard failover, an etcd member
killed (the Raft leader) or stopped.

Sentinel and Cluster clients are told where the servers are (by a Sentinel, by ``CLUSTER
SLOTS``), so a proxy in front of the URL's address would partition nothing: each replica
gets a proxy of its own in front of *every* server and Sentinel, and its process connects
through them (``tests/chaos/netmap``: its loopback ports remapped, see there).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.chaos.proxy import Proxy, ProxyLoop

KINDS = ("sqlite", "redis", "zookeeper", "postgresql", "sentinel", "cluster", "etcd", "redlock")
#: The fault types every backend reached over the network takes, in report order (the tail
#: of each served target's ``faults``).
SERVED_FAULTS = (
    "partition_blackhole",
    "partition_delay",
    "foreign_delete",
    "clock_jump",
    "clock_skew",
    "skewed_partition",
)
#: The directory whose ``sitecustomize`` remaps a replica's ports to its own proxies.
NETMAP_DIR = Path(__file__).resolve().parent / "netmap"


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

    def env_for(self, replica: str) -> dict[str, str]:
        """Extra environment of replica ``replica``'s process (called after ``url_for``)."""
        return {}

    def claim_epoch(self) -> str | None:
        """Redis: the claim epoch key as the current primary has it ("low:high", server
        milliseconds), None if unset or unreadable; other backends: None."""
        return None

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

    def terminate(self, replica: str) -> int:
        """End every server connection of ``replica`` server-side; returns how many."""
        raise NotImplementedError

    def fence_primary(self, crash: bool) -> None:
        """Stop the primary for good (kill -9 if ``crash``, else a clean shutdown)."""
        raise NotImplementedError

    def promote_standby(self) -> int:
        """Promote the standby (the primary must be fenced); returns its new timeline."""
        raise NotImplementedError

    def rebuild_standby(self) -> None:
        """Clone a new standby of the primary in place of the fenced old primary."""
        raise NotImplementedError

    @property
    def server_pid(self) -> int | None:
        return None

    def links(self, replica: str) -> list[Proxy]:
        """The proxies between ``replica`` and the backend (a partition cuts them all)."""
        return [self.proxies[replica]]

    def heal_all(self) -> None:
        for replica in self.proxies:
            for proxy in self.links(replica):
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
        *SERVED_FAULTS,
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
        *SERVED_FAULTS,
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


class PostgreSQLTarget(Target):
    """A primary and an asynchronous streaming standby, on two fixed ports ("slots").

    Each replica reaches each slot through a proxy of its own, and its URL lists both
    (``host:a,host:b``): libpq takes the first that accepts writes
    (``target_session_attrs=read-write``), so the replicas find the primary wherever it is,
    and a partition cuts both of a replica's proxies. Each replica's connections carry the
    ``application_name`` ``baton-<replica>``, which :meth:`terminate` aims at. Data
    survives a kill -9 (the kernel keeps what the server wrote; fsync is off for speed).

    A promotion is an HA manager's failover: the primary is fenced first (kill -9, or a
    fast shutdown), then the standby is promoted onto a new timeline, then the old
    primary's directory is discarded and a new standby of the new primary is cloned into
    its slot, so every promotion finds a standby and the slots never change.
    """

    kind = "postgresql"
    faults = (
        "kill_leader",
        "pause_leader",
        "backend_restart",
        "promotion",
        "terminate_backend",
        *SERVED_FAULTS,
    )
    SCHEMA = "baton"

    def __init__(self, workdir: Path, cluster: str, loop: ProxyLoop) -> None:
        super().__init__(workdir, cluster)
        from tests.harness.postgresql_server import PostgresServer

        self.primary = PostgresServer()
        self.standby: PostgresServer | None = None
        self._fenced: PostgresServer | None = None  # the old primary, until rebuilt
        self._loop = loop
        self._slots: tuple[int, int] = (self.primary.port, 0)
        self._second: dict[str, Proxy] = {}  # the replicas' proxies to the second slot
        self._observer: Any = None
        self._observer_port = 0

    def start(self) -> None:
        self.primary.start()
        self.standby = self.primary.make_standby()
        self._slots = (self.primary.port, self.standby.port)

    @staticmethod
    def application_name(replica: str) -> str:
        return f"baton-{replica}"

    def url_for(self, replica: str) -> str:
        if replica not in self.proxies:
            self.proxies[replica] = Proxy(self._loop, self._slots[0])
            self._second[replica] = Proxy(self._loop, self._slots[1])
        hosts = ",".join(f"127.0.0.1:{proxy.port}" for proxy in self.links(replica))
        server = self.primary
        return (
            f"postgresql://{quote(server.user)}:{quote(server.password)}@{hosts}/"
            f"{quote(server.database)}?application_name={self.application_name(replica)}"
        )

    def links(self, replica: str) -> list[Proxy]:
        return [self.proxies[replica], self._second[replica]]

    def _observe(self, statement: str, params: tuple[Any, ...]) -> Any:
        """Run ``statement`` as the superuser on the current primary (one kept connection,
        opened again once if it went stale: a restart or a failover ends it)."""
        import psycopg

        for attempt in (1, 2):
            if self._observer is None or self._observer_port != self.primary.port:
                self._close_observer()
                self._observer = self.primary.connect(options="-c statement_timeout=2000")
                self._observer_port = self.primary.port
            try:
                return self._observer.execute(statement, params)
            except psycopg.OperationalError:
                self._close_observer()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _close_observer(self) -> None:
        if self._observer is not None:
            with contextlib.suppress(Exception):
                self._observer.close()
        self._observer = None

    def holder(self) -> Holder | None:
        # Only a lease still valid on the server's clock (the one Baton's leases run on).
        try:
            row = self._observe(
                f"SELECT replica, token FROM {self.SCHEMA}.lease "
                "WHERE name = %s AND expires_at > clock_timestamp()",
                (self.cluster,),
            ).fetchone()
        except Exception:
            return None
        return Holder(str(row[0]), int(row[1])) if row else None

    def delete_lease(self) -> bool:
        cursor = self._observe(f"DELETE FROM {self.SCHEMA}.lease WHERE name = %s", (self.cluster,))
        return bool(cursor.rowcount > 0)

    def terminate(self, replica: str) -> int:
        return self.primary.terminate(self.application_name(replica))

    @property
    def server_pid(self) -> int | None:
        return self.primary.pid if self.primary.running else None

    def kill_server(self) -> None:
        self.primary.kill()

    def restart_server(self) -> None:
        self.primary.start()

    def fence_primary(self, crash: bool) -> None:
        if self.standby is None:
            raise RuntimeError("no standby to promote (its rebuild failed?)")
        if crash:
            self.primary.kill()
        else:
            self.primary.stop()
        self._fenced = self.primary

    def promote_standby(self) -> int:
        assert self.standby is not None and self._fenced is self.primary
        self.standby.promote()
        self.primary, self.standby = self.standby, None
        return self.primary.timeline_id

    def rebuild_standby(self) -> None:
        assert self._fenced is not None
        port = self._fenced.port
        self._fenced.cleanup()
        self._fenced = None
        self.standby = self.primary.make_standby(port=port)

    def close(self) -> None:
        for replica in self.proxies:
            for proxy in self.links(replica):
                proxy.close()
        self._close_observer()
        for server in (self.primary, self.standby, self._fenced):
            if server is not None:
                server.cleanup()


class EtcdTarget(Target):
    """A 3-member etcd cluster (data survives a kill -9: each member's WAL is on disk).

    Each replica reaches each member through a proxy of its own, and its URL lists the three
    (the client fails over between them), so a partition cuts all three of a replica's
    proxies. ``backend_restart`` kills the Raft leader member (kill -9) and restarts it on
    its directory; ``member_partition`` stops one member (SIGSTOP) for a few seconds: its
    peers and its clients then meet a member that accepts connections and never answers,
    as behind a blackholing partition (its peer links cannot be cut one by one: every
    member dials the others' single advertised peer address).
    """

    kind = "etcd"
    faults = (
        "kill_leader",
        "pause_leader",
        "backend_restart",
        "member_partition",
        *SERVED_FAULTS,
    )
    PREFIX = "/baton"

    def __init__(self, workdir: Path, cluster: str, loop: ProxyLoop) -> None:
        super().__init__(workdir, cluster)
        from tests.harness.etcd_server import EtcdCluster

        self.etcd = EtcdCluster(size=3)
        self._loop = loop
        self._links: dict[str, list[Proxy]] = {}
        self._killed: Any = None

    def start(self) -> None:
        self.etcd.start()

    def url_for(self, replica: str) -> str:
        if replica not in self._links:
            self._links[replica] = [Proxy(self._loop, m.port) for m in self.etcd.members]
            self.proxies[replica] = self._links[replica][0]
        hosts = ",".join(f"127.0.0.1:{proxy.port}" for proxy in self._links[replica])
        return f"etcd://{hosts}{self.PREFIX}"

    def links(self, replica: str) -> list[Proxy]:
        return self._links[replica]

    def _key(self, leaf: str) -> str:
        return f"{self.PREFIX}/{self.cluster}/lease/{leaf}"

    def holder(self) -> Holder | None:
        from scheduler.backends.etcd.gateway import b64, prefix_end, unb64

        prefix = self._key("")
        try:
            answer = self.etcd.call(
                "kv/range", {"key": b64(prefix), "range_end": prefix_end(prefix)}
            )
        except Exception:
            return None
        by_key = {kv["key"]: kv for kv in answer.get("kvs", [])}
        holder = by_key.get(b64(self._key("holder")))
        if holder is None:
            return None
        info = by_key.get(b64(self._key("info")))
        replica = ""
        if info is not None:
            with contextlib.suppress(ValueError):
                replica = str(json.loads(unb64(info.get("value", ""))).get("replica", ""))
        return Holder(replica, int(holder["create_revision"]))

    def delete_lease(self) -> bool:
        from scheduler.backends.etcd.gateway import b64

        answer = self.etcd.call("kv/deleterange", {"key": b64(self._key("holder"))})
        return int(answer.get("deleted", 0)) > 0

    @property
    def server_pid(self) -> int | None:
        with contextlib.suppress(Exception):
            return self.etcd.leader().pid
        return None

    def kill_server(self) -> None:
        self._killed = self.etcd.leader()
        self._killed.kill()

    def restart_server(self) -> None:
        if self._killed is not None:
            self._killed.start()
            self._killed = None

    def pick_member(self, rng: random.Random) -> Any:
        """A running member, at random."""
        return rng.choice(self.etcd.running())

    def heal_all(self) -> None:
        super().heal_all()
        for member in self.etcd.members:
            if member.running:
                member.resume()
        self.restart_server()

    def close(self) -> None:
        for links in self._links.values():
            for proxy in links:
                proxy.close()
        self.etcd.cleanup()


class _RemappedRedis(Target):
    """Base of the Redis deployments whose clients are told where the servers are: each
    replica reaches every server and Sentinel through proxies of its own (a partition cuts
    them all), its process remapping the ports to them (``BATON_CHAOS_NETMAP``)."""

    def __init__(
        self, workdir: Path, cluster: str, loop: ProxyLoop, options: dict[str, str] | None = None
    ) -> None:
        super().__init__(workdir, cluster)
        self._loop = loop
        #: Query options of the replicas' URL (``min_replicas_ack``; none: Baton's defaults).
        self.options = dict(options or {})
        self._links: dict[str, dict[int, Proxy]] = {}  # replica -> upstream port -> proxy
        self._clients: dict[int, Any] = {}  # observer clients by server port

    def _upstreams(self) -> list[int]:
        """Every port a replica's process may connect to."""
        raise NotImplementedError

    def _url(self) -> str:
        raise NotImplementedError

    def _primary(self) -> Any:
        """The data server holding the election's keys now (a RedisServer)."""
        raise NotImplementedError

    def url_for(self, replica: str) -> str:
        if replica not in self._links:
            self._links[replica] = {port: Proxy(self._loop, port) for port in self._upstreams()}
            self.proxies[replica] = next(iter(self._links[replica].values()))
        return self._url()

    def env_for(self, replica: str) -> dict[str, str]:
        from tests.harness.replicas import ROOT

        netmap = ",".join(f"{port}:{proxy.port}" for port, proxy in self._links[replica].items())
        return {
            "PYTHONPATH": f"{ROOT}{os.pathsep}{NETMAP_DIR}",
            "BATON_CHAOS_NETMAP": netmap,
        }

    def links(self, replica: str) -> list[Proxy]:
        return list(self._links[replica].values())

    def _keys(self) -> tuple[str, str, str]:
        base = f"baton:{{{self.cluster}}}"
        return f"{base}:lease", f"{base}:info", f"{base}:epoch"

    def _observer(self) -> Any:
        server = self._primary()
        client = self._clients.get(server.port)
        if client is None:
            client = self._clients[server.port] = server.client(timeout=1.0)
        return client

    def holder(self) -> Holder | None:
        lease, info, _ = self._keys()
        try:
            pipe = self._observer().pipeline(transaction=True)
            pipe.exists(lease)
            pipe.hmget(info, "replica", "token")
            exists, (replica, token) = pipe.execute()
        except Exception:
            return None
        if not exists or replica is None or token is None:
            return None
        return Holder(str(replica), int(token))

    def delete_lease(self) -> bool:
        return bool(self._observer().delete(self._keys()[0]))

    def claim_epoch(self) -> str | None:
        try:
            value = self._observer().get(self._keys()[2])
        except Exception:
            return None
        return None if value is None else str(value)

    @property
    def server_pid(self) -> int | None:
        try:
            server = self._primary()
        except Exception:
            return None
        return server.pid if server.running else None

    def _close_links(self) -> None:
        for links in self._links.values():
            for proxy in links.values():
                proxy.close()
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                client.close()


class SentinelTarget(_RemappedRedis):
    """A primary, 2 replicas and 3 Sentinels (:class:`tests.harness.redis_sentinel.
    SentinelGroup`, no persistence), replicas configured with ``redis+sentinel://`` and
    ``min_replicas_ack`` left at ``auto`` (every connected replica).

    The group's own fronts stay (they hold replication links: :meth:`hold_replication`);
    each replica's proxies sit in front of the fronts and of the Sentinels.
    """

    kind = "sentinel"
    faults = (
        "kill_leader",
        "pause_leader",
        "sentinel_failover",
        "primary_kill",
        "replication_partition",
        "lagging_promotion",
        *SERVED_FAULTS,
    )

    #: Seconds between two samples of every server's role and lease (``roles.jsonl``).
    SAMPLE_EVERY = 0.1

    def __init__(
        self, workdir: Path, cluster: str, loop: ProxyLoop, options: dict[str, str] | None = None
    ) -> None:
        super().__init__(workdir, cluster, loop, options)
        from tests.harness.redis_sentinel import SentinelGroup

        self.group = SentinelGroup(replicas=2, sentinels=3)
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> None:
        self.group.start()
        self._sampler = threading.Thread(target=self._sample, name="roles", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        """Every :data:`SAMPLE_EVERY` s, note each data server's role, the primary it
        follows and the lease holder it has, in ``roles.jsonl`` (one line per change): the
        evidence for a report of two primaries at once."""
        lease, info, _ = self._keys()
        clients = {s.port: s.client(timeout=0.3) for s in self.group.servers}
        last: dict[str, Any] = {}
        with (self.workdir / "roles.jsonl").open("a") as out:
            while not self._stop.wait(self.SAMPLE_EVERY):
                now: dict[str, Any] = {}
                for server in self.group.servers:
                    name = str(self.group.address(server)[1])
                    try:
                        client = clients[server.port]
                        role = client.info("replication")
                        pipe = client.pipeline(transaction=False)
                        pipe.get(lease)
                        pipe.hget(info, "token")
                        pipe.hget(info, "replica")
                        holder, token, replica = pipe.execute()
                        now[name] = [
                            role.get("role"),
                            role.get("master_port"),
                            replica if holder else None,
                            token if holder else None,
                        ]
                    except Exception:
                        now[name] = ["down"]
                if now != last:
                    out.write(json.dumps({"at": round(time.time(), 3), "servers": now}) + "\n")
                    out.flush()
                    last = now
        for client in clients.values():
            with contextlib.suppress(Exception):
                client.close()

    def _upstreams(self) -> list[int]:
        return [port for _, port in self.group.sentinels] + [
            self.group.address(server)[1] for server in self.group.servers
        ]

    def _url(self) -> str:
        return self.group.url(**self.options)

    def _primary(self) -> Any:
        return self.group.primary()

    def address(self, server: Any) -> str:
        """``host:port`` clients know ``server`` by (its front)."""
        host, port = self.group.address(server)
        return f"{host}:{port}"

    def failover(self) -> str:
        """``SENTINEL FAILOVER``, waited for; returns the new primary's address."""
        return self.address(self.group.failover())

    def kill_primary(self) -> Any:
        """kill -9 the primary; returns once the Sentinels promoted a replica."""
        return self.group.kill_primary()

    def rejoin(self, server: Any) -> None:
        """Restart a killed server; returns once it replicates from the current primary."""
        self.group.rejoin(server)

    def hold_replication(self, server: Any = None) -> None:
        """Hold the replication link of ``server`` (every replica's when None)."""
        self.group.pause_replication(server)

    def release_replication(self, server: Any = None) -> None:
        self.group.resume_replication(server)

    def pick_replica(self, rng: random.Random) -> Any:
        """One of the running replicas (not the primary), at random."""
        return rng.choice(self.group.replicas())

    def promote(self, server: Any) -> None:
        """Make the Sentinels promote ``server`` in particular (however far behind)."""
        self.group.promote(server)

    def heal_all(self) -> None:
        super().heal_all()
        self.group.heal()

    def close(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(5)
        self._close_links()
        self.group.cleanup()


class ClusterTarget(_RemappedRedis):
    """A Redis Cluster of 3 primaries and 3 replicas (:class:`tests.harness.redis_cluster.
    RedisClusterGroup`, no persistence), replicas configured with ``redis+cluster://`` and
    ``min_replicas_ack`` left at ``auto``. The faults aim at the shard holding the
    election's slot (every key of it shares the hash tag ``{<cluster>}``)."""

    kind = "cluster"
    faults = (
        "kill_leader",
        "pause_leader",
        "shard_failover",
        "node_kill",
        *SERVED_FAULTS,
    )

    def __init__(
        self, workdir: Path, cluster: str, loop: ProxyLoop, options: dict[str, str] | None = None
    ) -> None:
        super().__init__(workdir, cluster, loop, options)
        from tests.harness.redis_cluster import RedisClusterGroup

        self.group = RedisClusterGroup(primaries=3, replicas_per_primary=1)

    def start(self) -> None:
        self.group.start()

    def _upstreams(self) -> list[int]:
        return [node.port for node in self.group.nodes]

    def _url(self) -> str:
        return self.group.url(**self.options)

    def _primary(self) -> Any:
        return self.group.node_for_key(self._keys()[0])

    def failover_shard(self) -> int:
        """``CLUSTER FAILOVER`` on the replica of the election's shard, waited for; returns
        the new primary's port."""
        return int(self.group.failover_shard(self._keys()[0]).port)

    def kill_shard_primary(self) -> Any:
        """kill -9 the election shard's primary; returns once its replica took over."""
        node = self._primary()
        self.group.kill(node)
        return node

    def restart_node(self, node: Any) -> None:
        """Restart a killed node; returns once the cluster agrees (it rejoins as a replica)."""
        self.group.restart(node)

    def heal_all(self) -> None:
        super().heal_all()
        for node in self.group.nodes:
            if not node.running:
                self.group.restart(node)

    def close(self) -> None:
        self._close_links()
        self.group.cleanup()


def make_target(
    kind: str,
    workdir: Path,
    cluster: str,
    loop: ProxyLoop,
    url_options: dict[str, str] | None = None,
    primaries: int = 3,
) -> Target:
    """The target for ``kind`` (one of :data:`KINDS`); ``url_options`` (Sentinel and Cluster
    only) are added to the replicas' URL; ``primaries`` is Redlock's number of primaries."""
    if url_options and kind not in ("sentinel", "cluster"):
        raise ValueError(f"URL options are for the sentinel and cluster backends, not {kind!r}")
    if kind == "sqlite":
        return SqliteTarget(workdir, cluster)
    if kind == "redis":
        return RedisTarget(workdir, cluster, loop)
    if kind == "zookeeper":
        return ZooKeeperTarget(workdir, cluster, loop)
    if kind == "postgresql":
        return PostgreSQLTarget(workdir, cluster, loop)
    if kind == "sentinel":
        return SentinelTarget(workdir, cluster, loop, url_options)
    if kind == "cluster":
        return ClusterTarget(workdir, cluster, loop, url_options)
    if kind == "etcd":
        return EtcdTarget(workdir, cluster, loop)
    if kind == "redlock":
        from tests.chaos.redlock_target import RedlockTarget

        return RedlockTarget(workdir, cluster, loop, primaries)
    raise ValueError(f"unknown backend {kind!r}; choose one of {', '.join(KINDS)}")
