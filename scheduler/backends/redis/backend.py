"""The Redis backend's façade: one object with every role, each kept by its own module."""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime

import redis as redis_lib

from scheduler.backends.base import BatchDefaults
from scheduler.backends.redis.controls import RedisControls
from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.lease import RedisLeases, TokenFloors
from scheduler.backends.redis.ledger import RedisLedger
from scheduler.backends.redis.preflight import preflight
from scheduler.backends.redis.presence import RedisPresence
from scheduler.backends.redis.scripts import Scripts
from scheduler.backends.redis.url import connect, parse_url
from scheduler.backends.urls import BackendURL
from scheduler.clock import Clock
from scheduler.firing.runs import Retention, RunRecord
from scheduler.leadership.lease import Holder, Lease, LeaseRecord
from scheduler.leadership.members import Member


class RedisBackend(BatchDefaults):
    """Leases and run records in one Redis server (or one Cluster slot per election).

    Open it with :meth:`from_url`. Safe to share between threads, except that
    :meth:`wait_for_change` must be called from one thread only. No
    :class:`~scheduler.backends.base.LeaseNotifier` (see :mod:`.lease`); the ledger's batch
    methods loop (:class:`~scheduler.backends.base.BatchDefaults`).

    Args:
        client: a client whose calls are bounded and never retried (see :meth:`from_url`).
        url: the redacted backend URL, used in every error message.
        clock: the clock lease deadlines and ``since`` stamps are read from.
    """

    def __init__(self, client: redis_lib.Redis, url: str, clock: Clock) -> None:
        self.url = url
        self._client = client
        self._scripts = Scripts.register(client)
        floors = TokenFloors()
        self._leases = RedisLeases(client, self._scripts, url, clock, floors)
        self._ledger = RedisLedger(client, self._scripts, url, floors)
        self._presence = RedisPresence(client, self._scripts, url)
        self._controls = RedisControls(client, url)

    @classmethod
    def from_url(cls, url: str | BackendURL, *, op_timeout: float, clock: Clock) -> RedisBackend:
        """Open ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` (TLS).

        No connection is made until the first call.

        Args:
            url: the server URL (see :func:`~.url.parse_url` for its options).
            op_timeout: seconds each connect and each reply may take.
            clock: the clock deadlines are computed from.

        Raises:
            ConfigError: the URL is malformed, has an option not allowed, or tries to weaken
                TLS verification or the timeouts (key ``backend``).
        """
        target = parse_url(url)
        return cls(connect(target, op_timeout), target.shown, clock)

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r})"

    # -- lease store: scheduler.backends.redis.lease -------------------------------------------

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        return self._leases.try_acquire(name, holder, ttl)

    def renew(self, lease: Lease) -> Lease:
        return self._leases.renew(lease)

    def release(self, lease: Lease) -> None:
        self._leases.release(lease)

    def read(self, name: str) -> LeaseRecord | None:
        return self._leases.read(name)

    def wait_for_change(self, name: str, timeout: float) -> None:
        self._leases.wait_for_change(name, timeout)

    # -- run ledger: scheduler.backends.redis.ledger (batches from BatchDefaults) --------------

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        return self._ledger.claim(lease, run, retention)

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        return self._ledger.start(lease, run)

    def finish(self, name: str, run: RunRecord) -> None:
        self._ledger.finish(name, run)

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        return self._ledger.lookup(name, job, scheduled_time)

    def unclaim(self, name: str, run: RunRecord) -> bool:
        return self._ledger.unclaim(name, run)

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        return self._ledger.history(name, job, limit)

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        return self._ledger.claimed(name, job, since, until)

    # -- presence and controls: scheduler.backends.redis.presence, .controls -------------------

    def announce(self, name: str, member: Member, ttl: float) -> None:
        self._presence.announce(name, member, ttl)

    def withdraw(self, name: str, replica_id: str) -> None:
        self._presence.withdraw(name, replica_id)

    def members(self, name: str) -> list[Member]:
        return self._presence.members(name)

    def set_control(self, name: str, key: str, value: str | None) -> None:
        self._controls.set_control(name, key, value)

    def controls(self, name: str) -> dict[str, str]:
        return self._controls.controls(name)

    # -- preflight and lifetime ----------------------------------------------------------------

    def check(self) -> None:
        """PING the server with our credentials."""
        with translate_errors(self.url):
            self._client.ping()

    def preflight(self, name: str) -> None:
        """See :func:`~.preflight.preflight`."""
        preflight(self._client, self._scripts, self.url, name)

    def close(self) -> None:
        """Close the pub/sub connection and the pool; leases are left to expire."""
        self._leases.close()
        with suppress(redis_lib.RedisError, OSError):
            self._client.close()


__all__ = ["RedisBackend"]
