"""The lease store on PostgreSQL: a lease row per election name, compared against the
database's clock, and a fencing token that survives a failover (:mod:`.schema`).

**Why a row and not ``pg_try_advisory_lock``.** The advisory-lock snippets most Python
projects use fail three ways a distributed cron cannot accept:

* no fencing token: a session lock has no number that grows with each holder, so a
  paused holder that lost its lock cannot be told apart from the new one downstream;
* PgBouncer in transaction pooling mode (the usual deployment) hands the server
  connection that *holds* the session lock to other clients between transactions: the lock
  is held by a pooled connection, released by nobody, or "taken" twice;
* a dead holder is noticed only when the server's TCP stack gives up on its connection
  (minutes with default keepalives, for ever behind a NAT that dropped the flow), and a
  holder partitioned from the server keeps believing it holds the lock.

A row with an expiry on the server's clock has none of these: the holder loses it when the
expiry passes whatever its connection does, every statement is self-contained, and the
token is a counter. Each step is one function call (:mod:`.schema`), so the compare and
the act are one transaction.

**Handover.** :meth:`PostgresLeases.release` notifies :data:`~.schema.CHANNEL`; a
follower waits on ``LISTEN`` on a connection of its own, so a released lease is taken at
once. Behind PgBouncer (``pgbouncer=true``) notifications cannot be relied on (the
listening server connection is shared and recycled), so the follower polls the lease row
every :data:`POLL_INTERVAL` instead.
"""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from datetime import datetime
from typing import Any

import psycopg

from scheduler.backends.floors import TokenFloors
from scheduler.backends.postgresql.database import Database, conninfo
from scheduler.backends.postgresql.schema import CHANNEL, CLAIM_ALLOWANCE_MS
from scheduler.backends.rules import granted, ttl_ms
from scheduler.backends.states import LossReason
from scheduler.clock import Clock
from scheduler.errors import BackendError, LeaseLost
from scheduler.leadership.lease import Holder, Lease, LeaseRecord

#: Seconds between two reads of the lease row while a follower waits without
#: notifications (PgBouncer): a released lease is noticed this late at most.
POLL_INTERVAL = 0.05


class PostgresLeases:
    """The :class:`~scheduler.backends.base.LeaseStore` role.

    :meth:`wait_for_change` must be called from one thread only (it owns the listening
    connection).

    Args:
        db: the database (its ``lease`` pool for the writes, ``work`` for reads).
        clock: the clock local deadlines and ``since`` stamps are read from.
        floors: the token floors shared with the ledger.
    """

    def __init__(self, db: Database, clock: Clock, floors: TokenFloors) -> None:
        self._db = db
        self._s = db.schema
        self._clock = clock
        self._floors = floors
        self._listener: psycopg.Connection[Any] | None = None
        self._closed = threading.Event()

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Take lease ``name`` if it is free or expired by the server's clock, with a new
        fencing token (:data:`~.schema.ACQUIRE_FUNCTION`)."""
        ttl_in_ms = ttl_ms(ttl)
        since = self._clock.now().isoformat()
        sent_at = self._clock.monotonic()
        with self._db.lease.call() as conn:
            row = conn.execute(
                f"SELECT acquired, token FROM {self._s}.acquire(%s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    name,
                    holder.id,
                    holder.replica_id,
                    holder.host,
                    since,
                    ttl_in_ms,
                    self._floors.floor(name),
                    CLAIM_ALLOWANCE_MS,
                ),
            ).fetchone()
        assert row is not None
        acquired, token = bool(row[0]), int(row[1])
        self._floors.observe(name, token)
        if not acquired:
            return None
        return granted(name, holder, token, ttl, sent_at)

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` from the server's now, only if its holder and token hold it.

        Raises:
            LeaseLost: ``released``, ``not-holder``, ``stale-token`` (another term, or one
                from before a promotion) or ``expired``.
        """
        ttl_in_ms = ttl_ms(lease.ttl)
        sent_at = self._clock.monotonic()
        with self._db.lease.call() as conn:
            row = conn.execute(
                f"SELECT {self._s}.renew(%s, %s, %s, %s)",
                (lease.name, lease.holder.id, lease.token, ttl_in_ms),
            ).fetchone()
        reply = str(row[0]) if row else "released"
        if reply != "ok":
            raise LeaseLost(lease.name, LossReason(reply))
        return lease.renewed(sent_at)

    def release(self, lease: Lease) -> None:
        """Delete ``lease`` if still ours and notify the followers; a no-op otherwise."""
        with self._db.lease.call() as conn:
            conn.execute(
                f"SELECT {self._s}.release(%s, %s, %s)",
                (lease.name, lease.holder.id, lease.token),
            )

    def read(self, name: str) -> LeaseRecord | None:
        """The holder of ``name`` by the server's clock; ``None`` if free or expired."""
        with self._db.work.call() as conn:
            row = conn.execute(
                "SELECT replica, host, token, since, "
                "extract(epoch FROM expires_at - clock_timestamp()) "
                f"FROM {self._s}.lease WHERE name = %s AND expires_at > clock_timestamp()",
                (name,),
            ).fetchone()
        if row is None:
            return None
        token = int(row[2])
        self._floors.observe(name, token)
        return LeaseRecord(
            name=name,
            replica_id=str(row[0]),
            host=str(row[1]),
            token=token,
            since=datetime.fromisoformat(str(row[3])),
            ttl_left=max(0.0, float(row[4])),
        )

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` seconds; return early when ``name`` is released (a
        notification), or when the holder seen at the start is gone or its expiry passed.

        Never raises: a failure lets the wait run out (or poll), and the caller's next call
        reports it.
        """
        end = time.monotonic() + max(0.0, timeout)
        try:
            seen = self.read(name)
        except BackendError:
            seen = None
        if seen is not None and seen.ttl_left is not None:
            # A crashed holder never releases: wake when its expiry passes.
            end = min(end, time.monotonic() + seen.ttl_left + 0.001)
        if self._db.target.pgbouncer:
            self._poll(name, seen, end)
        else:
            self._listen(name, seen, end)

    def _poll(self, name: str, seen: LeaseRecord | None, end: float) -> None:
        while not self._closed.is_set():
            left = end - time.monotonic()
            if left <= 0 or self._closed.wait(min(POLL_INTERVAL, left)):
                return
            try:
                now = self.read(name)
            except BackendError:
                continue
            if _changed(seen, now):
                return

    def _listen(self, name: str, seen: LeaseRecord | None, end: float) -> None:
        conn = self._listening()
        if conn is None:
            self._poll(name, seen, end)
            return
        try:
            while not self._closed.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    return
                for note in conn.notifies(timeout=min(left, 1.0), stop_after=1):
                    if note.payload == name:
                        return
        except psycopg.Error:
            self._drop_listener()
            left = end - time.monotonic()
            if left > 0:
                self._closed.wait(min(left, POLL_INTERVAL))

    def _listening(self) -> psycopg.Connection[Any] | None:
        """The listening connection (opened and subscribed on first use); ``None`` when it
        cannot be opened now."""
        if self._listener is not None and not self._listener.closed:
            return self._listener
        try:
            conn = psycopg.Connection.connect(
                **conninfo(self._db.target, self._db.op_timeout), autocommit=True
            )
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error:
            return None
        self._listener = conn
        return conn

    def _drop_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with suppress(Exception):
                conn.close()

    def close(self) -> None:
        """Stop waiting and close the listening connection."""
        self._closed.set()
        self._drop_listener()


def _changed(seen: LeaseRecord | None, now: LeaseRecord | None) -> bool:
    """Whether the lease moved between two reads: released, taken, or newly held."""
    if seen is None or now is None:
        return seen is not now
    return (seen.replica_id, seen.token) != (now.replica_id, now.token)


__all__ = ["POLL_INTERVAL", "PostgresLeases", "TokenFloors"]
