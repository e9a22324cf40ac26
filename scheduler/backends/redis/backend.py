"""The Redis backend's façade: one object with every role, each kept by its own module.

**Connections.** Two bounded pools (:func:`~.url.connect`), so that the lease never waits
behind anything else this process sends:

* the **lease pool** (:data:`LEASE_CONNECTIONS`) carries only ``try_acquire``, ``renew``
  and ``release``: the elector's calls, one at a time, plus a release from a thread that
  shuts down. A burst of claims, history reads or HTTP requests cannot take its
  connections, so a renewal waits for nothing but the server;
* the **shared pool** (``max_connections``, default :data:`MAX_CONNECTIONS`) carries the
  ledger, presence, controls, ``read``, the preflight and the pub/sub subscription a
  follower waits on. When every connection is busy a call waits for one, up to
  ``op_timeout``, and only then fails (:class:`~scheduler.errors.BackendUnavailable`): a
  burst queues instead of failing with "Too many connections".

Sizes. A batch of claims is one script call (:mod:`.ledger`), so a leader has few ledger
calls in flight (a claim batch, a start batch, outcome batches, the maintenance pass);
Redis serves one command at a time anyway, so connections beyond a handful add queueing on
the server, not throughput, and each costs a file descriptor and ~20 KB on both ends
(``maxclients`` is 10,000 by default). 16 leaves room for the HTTP endpoints and the
workers' outcome writes; a smaller pool makes calls wait for a connection sooner, a
larger one only moves the queue to the server. The server still runs commands in arrival
order: a script of :data:`~.ledger.BATCH_SIZE` claims holds it 5-12 ms, which is all a
renewal can wait for it.
"""

from __future__ import annotations

from contextlib import suppress

import redis as redis_lib

from scheduler.backends.composite import RoleBackend
from scheduler.backends.redis.acks import Acks
from scheduler.backends.redis.clients import open_clients
from scheduler.backends.redis.controls import RedisControls
from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.lease import RedisLeases, TokenFloors
from scheduler.backends.redis.ledger import RedisLedger
from scheduler.backends.redis.preflight import preflight
from scheduler.backends.redis.presence import RedisPresence
from scheduler.backends.redis.scripts import Scripts
from scheduler.backends.redis.url import parse_url
from scheduler.backends.urls import BackendURL
from scheduler.clock import Clock

#: Connections of the lease pool: the elector's acquire/renew/release, one at a time,
#: and a release from another thread at shutdown.
LEASE_CONNECTIONS = 2
#: Connections of the shared pool when the caller does not say (see the module docstring).
MAX_CONNECTIONS = 16


class RedisBackend(RoleBackend):
    """Leases and run records in one Redis server (or one Cluster slot per election).

    Open it with :meth:`from_url`. The role methods are forwarded
    (:class:`~scheduler.backends.composite.RoleBackend`) to one object per role module.
    Safe to share between threads, except that :meth:`wait_for_change` must be called from
    one thread only. No :class:`~scheduler.backends.base.LeaseNotifier` (see :mod:`.lease`);
    the ledger's batch methods are one script call per chunk (:mod:`.ledger`).

    Args:
        client: the shared pool's client (see the module docstring); calls bounded and
            never retried.
        lease_client: the lease pool's client, used by nothing but the lease's writes.
        url: the redacted backend URL, used in every error message.
        clock: the clock lease deadlines and ``since`` stamps are read from.
        acks: the replication acknowledgements (:mod:`.acks`); ``None``: none.
    """

    def __init__(
        self,
        client: redis_lib.Redis,
        lease_client: redis_lib.Redis,
        url: str,
        clock: Clock,
        acks: Acks | None = None,
    ) -> None:
        self.url = url
        self._client = client
        self._lease_client = lease_client
        self._scripts = Scripts.register(client)
        floors = TokenFloors()
        acks = acks if acks is not None else Acks(0, url, 1.0)
        lease_scripts = Scripts.register(lease_client)
        self._leases = RedisLeases(
            lease_client, lease_scripts, client, self._scripts, url, clock, floors, acks
        )
        super().__init__(
            leases=self._leases,
            runs=RedisLedger(client, self._scripts, url, floors, acks),
            presence=RedisPresence(client, self._scripts, url),
            controls=RedisControls(client, url),
        )

    @classmethod
    def from_url(
        cls,
        url: str | BackendURL,
        *,
        op_timeout: float,
        clock: Clock,
        max_connections: int = MAX_CONNECTIONS,
    ) -> RedisBackend:
        """Open ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` (TLS).

        No connection is made until the first call.

        Args:
            url: the server URL (see :func:`~.url.parse_url` for its options).
            op_timeout: seconds each connect and each reply may take, and that a call may
                wait for a free connection.
            clock: the clock deadlines are computed from.
            max_connections: the size of the shared pool (the lease pool has its own
                :data:`LEASE_CONNECTIONS`).

        Raises:
            ConfigError: the URL is malformed, has an option not allowed, or tries to weaken
                TLS verification or the timeouts (key ``backend``).
            ValueError: ``max_connections`` is below 1.
        """
        target = parse_url(url)
        clients = open_clients(target, op_timeout, max_connections, LEASE_CONNECTIONS)
        acks = Acks(target.min_replicas_ack, target.shown, op_timeout, clients.node_client)
        return cls(clients.shared, clients.lease, target.shown, clock, acks)

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r})"

    # -- preflight and lifetime ----------------------------------------------------------------

    def check(self) -> None:
        """PING the server with our credentials."""
        with translate_errors(self.url):
            self._client.ping()

    def preflight(self, name: str) -> None:
        """See :func:`~.preflight.preflight`."""
        preflight(self._client, self._scripts, self.url, name)

    def close(self) -> None:
        """Close the pub/sub connection and both pools; leases are left to expire."""
        self._leases.close()
        for client in (self._client, self._lease_client):
            with suppress(redis_lib.RedisError, OSError):
                client.close()


__all__ = ["RedisBackend"]
