"""The lease store on SQLite: one ``lease`` row per election name, tokens in ``tokens``.

**Why expiry uses the monotonic clock, and why this backend is single-host only.** A lease
expiry must not move when someone sets the wall clock, so the row stores the expiry as a
reading of the injected :meth:`~scheduler.clock.Clock.monotonic` clock, which in production
is ``time.monotonic()``, i.e. Linux ``CLOCK_MONOTONIC``. That clock is shared by every process
on the host (it counts from boot), so one replica can compare another replica's expiry with
its own reading. It restarts from zero at each boot, so each row also carries the kernel boot
id (``/proc/sys/kernel/random/boot_id``); a row written during another boot is expired. A row
whose expiry lies further ahead than its own TTL cannot come from this clock either and is
expired too (:func:`~scheduler.backends.rules.grant_expired`): on platforms without a boot
id, a row left from before a reboot then looks live for at most its TTL. The consequences:

* replicas on different hosts (a database on NFS or another shared filesystem) would compare
  unrelated clocks, and SQLite locking is unreliable on network filesystems: use Redis or
  ZooKeeper for more than one host;
* replicas in containers on one host work when they share the file through a local volume,
  unless they run in separate Linux time namespaces with different monotonic offsets.

The fencing token of an acquisition is ``tokens.last_token + 1`` for that name, assigned in
the acquiring transaction; the ``tokens`` row outlives every release and expiry.

SQLite has no notifications, so :meth:`LeaseTable.wait_for_change` polls ``PRAGMA
data_version`` (which moves when another connection commits) every 20 ms and, when it moved,
compares the lease row and ``tokens.releases`` (bumped by every release, so an
acquire-and-release between two polls is not missed) with what it saw before.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scheduler.backends.rules import check_ttl, grant_expired, granted
from scheduler.backends.sqlite.database import Database
from scheduler.backends.states import LossReason
from scheduler.clock import Clock
from scheduler.errors import BackendUnavailable, LeaseLost
from scheduler.leadership.lease import Holder, Lease, LeaseRecord

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

#: Seconds between two looks at the database while waiting for a lease change.
POLL_INTERVAL = 0.02


def read_boot_id() -> str:
    """The kernel's id of the current boot, or ``""`` where the platform has none."""
    try:
        return Path(BOOT_ID_PATH).read_text(encoding="ascii").strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """One row of the ``lease`` table."""

    holder_id: str
    token: int
    replica: str
    host: str
    since_iso: str
    ttl: float
    expires_mono: float
    boot_id: str


def lease_row(conn: sqlite3.Connection, name: str) -> LeaseRow | None:
    """The lease row of ``name``, or ``None`` when there is none."""
    row = conn.execute(
        "SELECT holder_id, token, replica, host, since_iso, ttl, expires_mono, boot_id "
        "FROM lease WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    return LeaseRow(
        holder_id=str(row[0]),
        token=int(row[1]),
        replica=str(row[2]),
        host=str(row[3]),
        since_iso=str(row[4]),
        ttl=float(row[5]),
        expires_mono=float(row[6]),
        boot_id=str(row[7]),
    )


class LeaseTable:
    """The :class:`~scheduler.backends.base.LeaseStore` role on one database.

    Args:
        db: the database.
        clock: the clock lease expiries are read from; its ``monotonic`` must be the host's
            shared monotonic clock when several processes use the file.
        boot_id: the boot id to stamp and compare leases with.
    """

    def __init__(self, db: Database, clock: Clock, boot_id: str) -> None:
        self._db = db
        self._clock = clock
        self._boot_id = boot_id

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Take the lease ``name`` for ``ttl`` seconds if it is free or expired.

        Returns:
            The new lease with the next fencing token; ``None`` if it is held.
        """
        check_ttl(ttl)
        sent_at = self._clock.monotonic()
        with self._db.write(urgent=True) as conn:
            now = self._clock.monotonic()
            row = lease_row(conn, name)
            if row is not None and not self.expired(row, now):
                return None
            last = conn.execute("SELECT last_token FROM tokens WHERE name = ?", (name,)).fetchone()
            token = (int(last[0]) if last else 0) + 1
            conn.execute(
                "INSERT INTO tokens (name, last_token) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET last_token = excluded.last_token",
                (name, token),
            )
            conn.execute(
                "INSERT OR REPLACE INTO lease (name, holder_id, token, replica, host, "
                "since_iso, ttl, expires_mono, boot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    name,
                    holder.id,
                    token,
                    holder.replica_id,
                    holder.host,
                    self._clock.now().isoformat(),
                    ttl,
                    now + ttl,
                    self._boot_id,
                ),
            )
        return granted(name, holder, token, ttl, sent_at)

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` by its TTL from now, only if its holder and token still hold it.

        Raises:
            LeaseLost: reason ``released`` (no lease), ``not-holder`` (another holder or
                token) or ``expired``.
        """
        check_ttl(lease.ttl)
        sent_at = self._clock.monotonic()
        with self._db.write(urgent=True) as conn:
            now = self._clock.monotonic()
            self.require_held(conn, lease, now)
            conn.execute(
                "UPDATE lease SET expires_mono = ?, ttl = ? WHERE name = ?",
                (now + lease.ttl, lease.ttl, lease.name),
            )
        return lease.renewed(sent_at)

    def release(self, lease: Lease) -> None:
        """Delete ``lease`` if its holder and token still hold it; a no-op otherwise."""
        with self._db.write(urgent=True) as conn:
            deleted = conn.execute(
                "DELETE FROM lease WHERE name = ? AND holder_id = ? AND token = ?",
                (lease.name, lease.holder.id, lease.token),
            ).rowcount
            if deleted:
                # Followers polling in wait_for_change compare this counter.
                conn.execute(
                    "UPDATE tokens SET releases = releases + 1 WHERE name = ?", (lease.name,)
                )

    def read(self, name: str) -> LeaseRecord | None:
        """The current holder of ``name``; ``None`` if the lease is free or expired."""
        with self._db.session() as conn:
            row = lease_row(conn, name)
        now = self._clock.monotonic()
        if row is None or self.expired(row, now):
            return None
        return LeaseRecord(
            name=name,
            replica_id=row.replica,
            host=row.host,
            token=row.token,
            since=datetime.fromisoformat(row.since_iso),
            ttl_left=row.expires_mono - now,
        )

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` seconds; return early when lease ``name`` is released.

        Also returns early when the holder seen while waiting is replaced or its expiry
        passes (a crashed holder never releases). Polls every 20 ms; never raises: a backend
        failure just lets the wait run out, and the caller's next call reports it.
        """
        end = time.monotonic() + max(0.0, timeout)
        # Version first: a commit landing between the two reads then still counts as a change.
        version = self._db.data_version()
        generation = self._db.generation
        try:
            watched, releases = self._snapshot(name)
        except BackendUnavailable:
            watched, releases = None, -1
        while not self._db.closed:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            current_generation = self._db.wait_local_commit(
                generation, min(POLL_INTERVAL, remaining)
            )
            if watched is not None and self.expired(watched, self._clock.monotonic()):
                return
            current_version = self._db.data_version()
            if current_generation == generation and current_version == version:
                continue
            generation, version = current_generation, current_version
            try:
                row, current_releases = self._snapshot(name)
            except BackendUnavailable:
                continue
            # The release counter catches an acquire-and-release that fits between two polls.
            if releases >= 0 and current_releases != releases:
                return
            if watched is not None and (
                row is None
                or (row.holder_id, row.token) != (watched.holder_id, watched.token)
                or self.expired(row, self._clock.monotonic())
            ):
                return
            # Same holder (renewed), or a first holder of a lease that was free: watch it.
            watched, releases = row, current_releases

    def expired(self, row: LeaseRow, now: float) -> bool:
        """Whether ``row`` no longer holds at monotonic time ``now``."""
        if row.boot_id != self._boot_id:
            return True  # written during another boot: its monotonic reading means nothing now
        return grant_expired(row.expires_mono, row.ttl, now)

    def require_held(self, conn: sqlite3.Connection, lease: Lease, now: float) -> None:
        """Check, inside the caller's transaction on ``conn``, that ``lease`` is the live lease.

        Raises:
            LeaseLost: reason ``released``, ``not-holder`` or ``expired``.
        """
        row = lease_row(conn, lease.name)
        if row is None:
            raise LeaseLost(lease.name, LossReason.RELEASED)
        if row.holder_id != lease.holder.id or row.token != lease.token:
            raise LeaseLost(lease.name, LossReason.NOT_HOLDER)
        if self.expired(row, now):
            raise LeaseLost(lease.name, LossReason.EXPIRED)

    def _snapshot(self, name: str) -> tuple[LeaseRow | None, int]:
        """The lease row of ``name`` and how many times that lease was ever released."""
        with self._db.session() as conn:
            row = lease_row(conn, name)
            found = conn.execute("SELECT releases FROM tokens WHERE name = ?", (name,)).fetchone()
        return row, int(found[0]) if found else 0


__all__ = ["BOOT_ID_PATH", "POLL_INTERVAL", "LeaseRow", "LeaseTable", "lease_row", "read_boot_id"]
