"""A Redis Cluster of 3 primaries and 3 replicas on loopback ports, for issue 15's tests.

:class:`RedisClusterGroup` starts six ``cluster-enabled`` servers, joins them with
``redis-cli --cluster create`` and waits until every node agrees on the slot map. It answers
"which node owns this key" from ``CLUSTER KEYSLOT`` and ``CLUSTER SLOTS``, and makes the
faults of a cluster: a manual failover of one shard (``CLUSTER FAILOVER`` on its replica)
and a kill -9 of a node (its replica is promoted by the cluster after
``cluster-node-timeout``, 2 s here).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any, Self
from urllib.parse import urlencode

from tests.harness.redis_sentinel import distinct_free_ports, wait_for
from tests.harness.redis_server import HOST, RedisServer

#: ms without an answer before a node counts as failing; its replica takes over soon after.
#: Short for fast tests, not so short that a loaded CI box fails nodes over by itself.
NODE_TIMEOUT_MS = 2000
#: Seconds to wait for the cluster to agree after a create, a failover or a kill.
SETTLE_TIMEOUT = 60.0
SLOTS = 16384


def redis_cli_binary() -> str:
    """The path of ``redis-cli``; fails loudly when it is missing (never a skip)."""
    path = shutil.which("redis-cli")
    if path is None:
        raise RuntimeError(
            "redis-cli is not installed or not on PATH; the Redis Cluster tests need it to "
            "create the cluster (apt-get install redis-tools)"
        )
    return path


#: One ``CLUSTER SLOTS`` entry: (first slot, last slot, primary, replicas sorted).
SlotRange = tuple[int, int, tuple[str, int], list[tuple[str, int]]]


def cluster_slots(node: RedisServer) -> list[SlotRange]:
    """``CLUSTER SLOTS`` of ``node``, sorted by slot."""
    with node.client(timeout=1.0) as client:
        raw: list[Any] = client.execute_command("CLUSTER", "SLOTS")
    ranges = []
    for first, last, primary, *replicas in raw:
        ranges.append(
            (
                int(first),
                int(last),
                (str(primary[0]), int(primary[1])),
                sorted((str(r[0]), int(r[1])) for r in replicas),
            )
        )
    return sorted(ranges)


class RedisClusterGroup:
    """``primaries`` primaries with ``replicas_per_primary`` replicas each, as one cluster.

    Args:
        primaries: how many shards (3 is the least ``redis-cli --cluster create`` accepts).
        replicas_per_primary: replicas of each shard.
        node_timeout_ms: ``cluster-node-timeout``: long for a cluster that must never fail
            over by itself (the session's, under a loaded machine).
    """

    def __init__(
        self,
        primaries: int = 3,
        replicas_per_primary: int = 1,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
    ) -> None:
        self._cli = redis_cli_binary()
        self.replicas_per_primary = replicas_per_primary
        self.nodes: list[RedisServer] = []
        count = primaries * (1 + replicas_per_primary)
        ports = distinct_free_ports(2 * count)
        for port, bus_port in zip(ports[:count], ports[count:], strict=True):
            config = {
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": str(node_timeout_ms),
                # The bus port is port + 10000 unless set: that may be taken or above 65535.
                "cluster-port": str(bus_port),
                # A replica may always take over, however long its link was down.
                "cluster-replica-validity-factor": "0",
                # CLUSTER SLOTS lists a replica once its replication offset is not 0, which in
                # an empty cluster only the primary's replication PING moves (10 s default).
                "repl-ping-replica-period": "1",
                "repl-diskless-sync": "yes",
                "repl-diskless-sync-delay": "0",
            }
            self.nodes.append(RedisServer(port=port, config=config))
        self._seeds = [(HOST, n.port) for n in self.nodes[:primaries]]

    def start(self) -> Self:
        """Start the nodes, create the cluster, and wait until every node agrees on it."""
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"{HOST}:{n.port}" for n in self.nodes]
            options = ["--cluster-replicas", str(self.replicas_per_primary), "--cluster-yes"]
            created = subprocess.run(
                [self._cli, "--cluster", "create", *addresses, *options],
                capture_output=True,
                text=True,
                timeout=SETTLE_TIMEOUT,
                stdin=subprocess.DEVNULL,
            )
            if created.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed ({created.returncode}): "
                    f"{(created.stdout + created.stderr)[-2000:]}"
                )
            self.wait_settled()
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        """Stop every node (by PID) and remove its directory."""
        for node in self.nodes:
            node.cleanup()

    def url(self, **options: object) -> str:
        """``redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3[?options]``: the first
        primaries as seeds (any reachable node would do)."""
        hosts = ",".join(f"{host}:{port}" for host, port in self._seeds)
        query = f"?{urlencode(options)}" if options else ""
        return f"redis+cluster://{hosts}{query}"

    def node_at(self, address: tuple[str, int]) -> RedisServer:
        for node in self.nodes:
            if (HOST, node.port) == (address[0], int(address[1])):
                return node
        raise LookupError(f"no node of this cluster at {address}")

    def slot(self, key: str) -> int:
        """``CLUSTER KEYSLOT key``."""
        with self._any_node().client(timeout=1.0) as client:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))

    def node_for_key(self, key: str) -> RedisServer:
        """The primary owning ``key``'s slot now."""
        return self.node_at(self._range_of(key)[2])

    def replicas_for_key(self, key: str) -> list[RedisServer]:
        """The replicas of the shard owning ``key``'s slot."""
        return [self.node_at(a) for a in self._range_of(key)[3]]

    def primaries(self) -> list[RedisServer]:
        """The nodes that own slots now."""
        return [self.node_at(r[2]) for r in cluster_slots(self._any_node())]

    def failover_shard(self, key: str, timeout: float = SETTLE_TIMEOUT) -> RedisServer:
        """``CLUSTER FAILOVER`` on a replica of ``key``'s shard; wait until it is the primary
        every node reports for the slot; returns it. The old primary becomes its replica."""
        old = self.node_for_key(key)
        replicas = self.replicas_for_key(key)
        if not replicas:
            raise RuntimeError(f"the shard of {key!r} on {old.port} has no replica to promote")
        replica = replicas[0]
        with replica.client(timeout=1.0) as client:
            client.execute_command("CLUSTER", "FAILOVER")
        wait_for(
            lambda: self._settled() and self.node_for_key(key) is replica,
            timeout,
            f"{replica.port} owning slot {self.slot(key)} in place of {old.port}",
        )
        return replica

    def kill(self, node: RedisServer, timeout: float = SETTLE_TIMEOUT) -> None:
        """kill -9 ``node``; if it owned slots, wait until its replica owns them on every
        running node and the cluster is ok again."""
        owned = [(r[0], r[1]) for r in cluster_slots(node) if r[2] == (HOST, node.port)]
        node.kill()
        if owned:
            wait_for(
                lambda: all(
                    r[2] != (HOST, node.port)
                    for r in cluster_slots(self._any_node())
                    if (r[0], r[1]) in owned
                ),
                timeout,
                f"a replica taking over the slots of {node.port}",
            )
        self.wait_settled(timeout)

    def restart(self, node: RedisServer, timeout: float = SETTLE_TIMEOUT) -> None:
        """Start a killed ``node`` again (it rejoins from its nodes.conf, as a replica if it
        was failed over) and wait until the cluster agrees."""
        node.start()
        self.wait_settled(timeout)

    def wait_settled(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Wait until every running node says ``cluster_state:ok``, reports the same slot
        map covering all slots, and every replica's link is up."""
        wait_for(self._settled, timeout, "every node agreeing on an ok cluster")

    def _settled(self) -> bool:
        maps = []
        running = [n for n in self.nodes if n.running]
        for node in running:
            with node.client(timeout=1.0) as client:
                info = client.cluster("INFO")
                if info["cluster_state"] != "ok" or int(info["cluster_slots_ok"]) != SLOTS:
                    return False
                replication = client.info("replication")
                if replication["role"] == "slave" and replication["master_link_status"] != "up":
                    return False
            maps.append(cluster_slots(node))
        if any(m != maps[0] for m in maps):
            return False
        covered = sum(last - first + 1 for first, last, _, _ in maps[0])
        placed = {a for r in maps[0] for a in [r[2], *r[3]]}
        return covered == SLOTS and placed == {(HOST, n.port) for n in running}

    def _range_of(self, key: str) -> SlotRange:
        slot = self.slot(key)
        for entry in cluster_slots(self._any_node()):
            if entry[0] <= slot <= entry[1]:
                return entry
        raise LookupError(f"slot {slot} is not served")

    def _any_node(self) -> RedisServer:
        for node in self.nodes:
            if node.running:
                return node
        raise RuntimeError("no node of the cluster is running")
