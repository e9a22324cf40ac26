"""The clients of each Redis deployment: one primary, a primary named by Sentinel, Redis
Cluster. Each is two bounded pools (the lease's and the shared one, :mod:`.backend`) whose
calls are bounded by ``op_timeout`` and never retried by redis-py.

**Sentinel.** redis-py's ``Sentinel`` asks the Sentinels for the current primary before it
opens a connection (here: the primary a majority of them names, :class:`QuorumSentinel`),
and drops a pooled connection to a former primary (its ``READONLY`` error, a refused
connection) so the next call goes to the new one: a failover needs no restart. Each
Sentinel is asked with a timeout of ``op_timeout`` divided by their number, so finding the
primary fits in one ``op_timeout`` whatever the Sentinels do. The pool is redis-py's
Sentinel pool made blocking (:class:`BlockingSentinelPool`): a call waits for a free
connection up to ``op_timeout``, as on one primary.

**Cluster.** ``RedisCluster`` routes every command by its key; all keys of an election
share one hash tag (:mod:`.keys`), so every script touches one slot and one shard. It
follows ``MOVED``/``ASK`` and refreshes the slot map after a shard's failover; Baton lets it
try once more at most (``retry=Retry(NoBackoff(), 1)`` at the cluster level), so a call
takes at most two of its bounds. ``max_connections`` bounds the connections per node.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis as redis_lib
from redis._parsers import Encoder
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.commands.core import Script
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import (
    MasterNotFoundError,
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from scheduler.backends.redis.url import RedisTarget, connect

#: The shortest time one Sentinel is given to answer, in seconds.
MIN_SENTINEL_TIMEOUT = 0.1


class _AsksSentinel:
    """Connections that ask the Sentinels for the primary every time they open a socket.

    redis-py's Sentinel connection asks only in ``connect()``; a connection whose socket
    was dropped reopens it from ``send_packed_command`` with the address it had, which
    after a failover is the old primary: restarted, it serves stale data as a primary of its
    own for a moment before Sentinel turns it into a replica (seen in the Sentinel
    benchmark: a lease read there as expired). So the address is asked again here.
    """

    connection_pool: Any
    host: str
    port: int

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[misc]


class SentinelConnection(_AsksSentinel, SentinelManagedConnection):
    """A plain connection to the primary the Sentinels name (see :class:`_AsksSentinel`)."""


class SentinelSSLConnection(_AsksSentinel, SentinelManagedSSLConnection):
    """A TLS connection to the primary the Sentinels name (see :class:`_AsksSentinel`)."""


class BlockingSentinelPool(SentinelConnectionPool, redis_lib.BlockingConnectionPool):
    """redis-py's Sentinel pool (the primary asked of the Sentinels, connections to a former
    primary dropped), bounded: a call waits up to its timeout for a free connection."""


@dataclass(frozen=True)
class Clients:
    """The two clients of a backend, and how to reach the node serving a key.

    Attributes:
        shared: the shared pool's client.
        lease: the lease pool's client.
        node_client: Redis Cluster only: ``(client, key)`` -> the plain client of the node
            serving ``key`` (for a ``WAIT``, which has no key to route by); else ``None``.
    """

    shared: Any
    lease: Any
    node_client: Any = None


def _tls(target: RedisTarget) -> dict[str, Any]:
    if not target.tls:
        return {}
    return {
        "ssl_cert_reqs": "required",
        "ssl_check_hostname": True,
        "ssl_ca_certs": target.ssl_ca_certs,
        "ssl_certfile": target.ssl_certfile,
        "ssl_keyfile": target.ssl_keyfile,
    }


def _common(target: RedisTarget, op_timeout: float) -> dict[str, Any]:
    return {
        "username": target.username,
        "password": target.password,
        "client_name": target.client_name,
        "socket_timeout": op_timeout,
        "socket_connect_timeout": op_timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_error": [],
        "decode_responses": True,
    }


class QuorumSentinel(Sentinel):
    """redis-py's Sentinel client, but the primary is the one a **majority** of the
    configured Sentinels name, not the first Sentinel's answer.

    After a ``kill -9`` of the primary and its restart (empty, until Sentinel makes it a
    replica), one Sentinel went on naming the restarted server as the primary for
    0.7-0.9 s while the others named the promoted replica. A replica that asked that one
    took the lease on the empty server while another held it on the real primary, and a
    tick ran twice (CHAOS.md, F13). With a majority, a lone stale Sentinel is outvoted; no
    majority is no primary (:class:`~redis.sentinel.MasterNotFoundError`, transient).
    """

    def discover_master(self, service_name: str) -> tuple[str, int]:
        votes: Counter[tuple[str, int]] = Counter()
        errors: list[str] = []
        for sentinel in self.sentinels:
            try:
                masters = sentinel.sentinel_masters()
            except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
                errors.append(f"{sentinel} - {exc!r}")
                continue
            state = cast(dict[str, Any], masters).get(service_name)
            if state and self.check_master_state(state, service_name):  # type: ignore[no-untyped-call]
                votes[(str(state["ip"]), int(state["port"]))] += 1
        needed = len(self.sentinels) // 2 + 1
        for address, count in votes.most_common(1):
            if count >= needed:
                return address
        detail = f": {', '.join(errors)}" if errors else ""
        raise MasterNotFoundError(
            f"no primary named by a majority ({needed} of {len(self.sentinels)}) of the "
            f"Sentinels for {service_name!r}{detail}"
        )


def _sentinel(target: RedisTarget, op_timeout: float) -> Sentinel:
    each = max(MIN_SENTINEL_TIMEOUT, op_timeout / max(1, len(target.hosts)))
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": each,
        "socket_connect_timeout": each,
        "retry": Retry(NoBackoff(), 0),
        "username": target.sentinel_username,
        "password": target.sentinel_password,
        **({"ssl": True, **_tls(target)} if target.tls else {}),
    }
    # redis-py's sentinel module is untyped
    return QuorumSentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]


def _primary(
    sentinel: Sentinel, target: RedisTarget, op_timeout: float, max_connections: int
) -> redis_lib.Redis:
    options = {**_common(target, op_timeout), "db": target.db, **_tls(target)}
    options["connection_class"] = SentinelSSLConnection if target.tls else SentinelConnection
    client: redis_lib.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.service_name,
        connection_pool_class=BlockingSentinelPool,
        max_connections=max_connections,
        timeout=op_timeout,
        **options,
    )
    client.auto_close_connection_pool = True
    return client


class LazyCluster:
    """A ``RedisCluster`` made on its first use, as every other client connects lazily:
    ``RedisCluster`` reads the slot map from a seed node as it is constructed, and a replica
    must start (and retry) while the Cluster is unreachable. Attributes are forwarded; a
    failure to reach any seed node is a ``ConnectionError`` (so: transient)."""

    def __init__(self, make: Callable[[], RedisCluster]) -> None:
        self._make = make
        self._client: RedisCluster | None = None
        self._lock = threading.Lock()

    def get_encoder(self) -> Encoder:
        """The encoder scripts are hashed with, known without connecting (UTF-8)."""
        return Encoder("utf-8", "strict", True)  # type: ignore[no-untyped-call]

    def register_script(self, script: str) -> Script:
        """A script bound to this client (hashed now, sent at its first call)."""
        return Script(self, script)  # type: ignore[arg-type]  # duck-typed RedisCluster

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real(), name)

    def _real(self) -> RedisCluster:
        with self._lock:
            if self._client is None:
                try:
                    self._client = self._make()
                except RedisClusterException as exc:
                    raise redis_lib.ConnectionError(str(exc)) from exc
            return self._client


def _cluster(target: RedisTarget, op_timeout: float, max_connections: int) -> LazyCluster:
    options = {**_common(target, op_timeout), **_tls(target)}
    if target.tls:
        options["ssl"] = True
    return LazyCluster(lambda: _new_cluster(target, max_connections, options))


def _new_cluster(
    target: RedisTarget, max_connections: int, options: dict[str, Any]
) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[
            ClusterNode(host, port)  # type: ignore[no-untyped-call]
            for host, port in target.hosts
        ],
        max_connections=max_connections,
        **{**options, "retry": Retry(NoBackoff(), 1)},
    )


def _node_client(client: Any, key: str) -> redis_lib.Redis:
    node = client.get_node_from_key(key)
    return cast(redis_lib.Redis, client.get_redis_connection(node))


def open_clients(
    target: RedisTarget, op_timeout: float, max_connections: int, lease_connections: int
) -> Clients:
    """The shared and the lease client of ``target``'s deployment; nothing is connected
    until the first call.

    Raises:
        ValueError: a pool size below 1.
    """
    if min(max_connections, lease_connections) < 1:
        raise ValueError(f"pool sizes must be at least 1, got {max_connections!r}")
    if target.mode == "sentinel":
        sentinel = _sentinel(target, op_timeout)
        return Clients(
            _primary(sentinel, target, op_timeout, max_connections),
            _primary(sentinel, target, op_timeout, lease_connections),
        )
    if target.mode == "cluster":
        return Clients(
            _cluster(target, op_timeout, max_connections),
            _cluster(target, op_timeout, lease_connections),
            _node_client,
        )
    return Clients(
        connect(target, op_timeout, max_connections),
        connect(target, op_timeout, lease_connections),
    )


__all__ = ["BlockingSentinelPool", "Clients", "LazyCluster", "QuorumSentinel", "open_clients"]
