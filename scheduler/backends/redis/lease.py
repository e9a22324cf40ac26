"""The lease store on Redis: ``SET NX PX`` and a fencing token, each step one script.

A call that times out may still have run on the server: an acquire whose reply was lost
leaves a lease that nobody can renew, and it blocks everyone (its own holder included,
since acquire is ``SET NX``) until its TTL runs out.

Redis pushes no expiry news, so this store is no
:class:`~scheduler.backends.base.LeaseNotifier`: keyspace notifications could, but they are
off by default, need server-side configuration, and pub/sub delivery is at-most-once anyway.
Loss shows at the next renewal. Releases are published on the election's channel, which
:meth:`RedisLeases.wait_for_change` listens to.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime

import redis as redis_lib
from redis.client import PubSub

from scheduler.backends.floors import TokenFloors
from scheduler.backends.redis.acks import Acks, NotAcknowledged
from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.keys import channel, epoch_key, lease_keys, server_key
from scheduler.backends.redis.releases import ReleaseWaiter
from scheduler.backends.redis.scripts import CLAIM_ALLOWANCE_MS, Scripts
from scheduler.backends.rules import granted, ttl_ms
from scheduler.backends.runs import from_fire_key
from scheduler.backends.states import LossReason
from scheduler.clock import Clock
from scheduler.errors import BackendError, LeaseLost
from scheduler.leadership.lease import Holder, Lease, LeaseRecord


def lease_lost(name: str, reply: object) -> LeaseLost:
    """The :class:`LeaseLost` for a script's ``lost`` reply (``expired``, ``not-holder``,
    ``stale-token``)."""
    return LeaseLost(name, LossReason(str(reply)))


class RedisLeases:
    """The :class:`~scheduler.backends.base.LeaseStore` role on two Redis clients.

    Safe to share between threads, except that :meth:`wait_for_change` must be called from
    one thread only.

    Args:
        client: the client of the lease's writes (acquire, renew, release): its own
            connections, which nothing else uses (see :mod:`.backend`). Calls bounded and
            never retried.
        scripts: the scripts registered with ``client``.
        observer: the client of :meth:`read` and of the pub/sub subscription of
            :meth:`wait_for_change` (the shared pool: a follower's observations never take
            a connection the holder's renewal needs).
        observer_scripts: the scripts registered with ``observer``.
        url: the redacted backend URL, used in every error message.
        clock: the clock lease deadlines and ``since`` stamps are read from.
        floors: the token floors shared with the ledger.
        acks: the replication acknowledgements an acquisition waits for (:mod:`.acks`).
    """

    def __init__(
        self,
        client: redis_lib.Redis,
        scripts: Scripts,
        observer: redis_lib.Redis,
        observer_scripts: Scripts,
        url: str,
        clock: Clock,
        floors: TokenFloors,
        acks: Acks,
    ) -> None:
        self._acks = acks
        self._client = client
        self._scripts = scripts
        self._observer = observer
        self._observer_scripts = observer_scripts
        self._url = url
        self._clock = clock
        self._floors = floors
        self._releases = ReleaseWaiter(self._connect)

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Take lease ``name`` with ``SET NX PX`` and a new fencing token, in one script."""
        lease_key, info_key, token_key = lease_keys(name)
        ttl_in_ms = ttl_ms(ttl)
        since = self._clock.now().isoformat()
        sent_at = self._clock.monotonic()
        # auto: as many acknowledgements as replicas are connected now (see .acks)
        self._acks.refresh(self._client, name)
        try:
            reply = self._acks.script(
                self._client,
                name,
                self._scripts.acquire,
                [lease_key, info_key, token_key, epoch_key(name), server_key(name)],
                [
                    holder.id,
                    ttl_in_ms,
                    self._floors.floor(name),
                    holder.replica_id,
                    holder.host,
                    since,
                    CLAIM_ALLOWANCE_MS,
                ],
            )
        except NotAcknowledged as exc:
            # Held on the primary but not on enough replicas: a failover could hand the
            # token out again. Given back at once rather than left to block for its TTL.
            acquired, token = int(exc.reply[0]), int(exc.reply[1])
            if acquired:
                self._floors.observe(name, token)
                with suppress(BackendError):
                    self.release(granted(name, holder, token, ttl, sent_at))
            raise
        acquired, token = int(reply[0]), int(reply[1])
        self._floors.observe(name, token)
        if not acquired:
            return None
        return granted(name, holder, token, ttl, sent_at)

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` if its holder id and token are still the ones stored.

        Raises:
            LeaseLost: reason ``expired``, ``not-holder`` or ``stale-token``.
        """
        lease_key, info_key, _ = lease_keys(lease.name)
        ttl_in_ms = ttl_ms(lease.ttl)
        sent_at = self._clock.monotonic()
        # auto: count the replicas again, so that one that died is not waited for until the
        # next acquisition (every claim would fail meanwhile: seen in the Sentinel benchmark).
        self._acks.refresh(self._client, lease.name)
        with translate_errors(self._url):
            reply = self._scripts.renew(
                keys=[lease_key, info_key], args=[lease.holder.id, str(lease.token), ttl_in_ms]
            )
        if reply != "ok":
            raise lease_lost(lease.name, reply)
        self._floors.observe(lease.name, lease.token)
        return lease.renewed(sent_at)

    def release(self, lease: Lease) -> None:
        """Delete ``lease`` if it is still ours and wake the followers; else do nothing."""
        lease_key, info_key, _ = lease_keys(lease.name)
        with translate_errors(self._url):
            self._scripts.release(
                keys=[lease_key, info_key],
                args=[lease.holder.id, str(lease.token), channel(lease.name)],
            )

    def read(self, name: str) -> LeaseRecord | None:
        """The holder of ``name`` and its remaining TTL, read atomically."""
        lease_key, info_key, _ = lease_keys(name)
        with translate_errors(self._url):
            reply = self._observer_scripts.read(keys=[lease_key, info_key])
        if not reply:
            return None
        replica, host, token, since, pttl = reply
        self._floors.observe(name, int(token))
        return LeaseRecord(
            name=name,
            replica_id=str(replica),
            host=str(host),
            token=int(token),
            since=datetime.fromisoformat(since) if since else from_fire_key(0),
            ttl_left=int(pttl) / 1000 if int(pttl) >= 0 else None,
        )

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` s on the events channel; return early on ``released``
        (:class:`~scheduler.backends.redis.releases.ReleaseWaiter`)."""
        self._releases.wait_for_change(name, timeout)

    def close(self) -> None:
        """Close the pub/sub connection and wake a waiter."""
        self._releases.close()

    def _connect(self) -> PubSub:
        # Redis or RedisCluster (a ClusterPubSub, on the node of the channel's slot). Late:
        # a cluster client connects on its first use.
        return self._observer.pubsub()  # type: ignore[no-untyped-call, no-any-return]


__all__ = ["RedisLeases", "TokenFloors", "lease_lost"]
