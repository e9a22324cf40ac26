"""The embedded default backend: replicas on one host sharing one SQLite file, no server.

Every replica process opens the same database file. Each write is a single
``BEGIN IMMEDIATE`` transaction, which takes SQLite's write lock before reading, so every
compare-and-act (acquire, renew, release, claim) is atomic across processes. The file runs
in WAL mode with ``synchronous=NORMAL``: a committed transaction survives the crash (even a
``kill -9``) of any process; only an operating-system crash or power loss may drop the last
few commits.

**Why expiry uses the monotonic clock, and why this backend is single-host only.** A lease
expiry must not move when someone sets the wall clock, so the row stores the expiry as a
reading of the injected :meth:`~scheduler.clock.Clock.monotonic` clock, which in production
is ``time.monotonic()``, i.e. Linux ``CLOCK_MONOTONIC``. That clock is shared by every process
on the host (it counts from boot), so one replica can compare another replica's expiry with
its own reading. It restarts from zero at each boot, so each row also carries the kernel boot
id (``/proc/sys/kernel/random/boot_id``); a row written during another boot is expired. A row
whose expiry lies further ahead than its own TTL cannot come from this clock either and is
expired too: on platforms without a boot id, a row left from before a reboot then looks live
for at most its TTL. The consequences:

* replicas on different hosts (a database on NFS or another shared filesystem) would compare
  unrelated clocks, and SQLite locking is unreliable on network filesystems: use Redis or
  ZooKeeper for more than one host;
* replicas in containers on one host work when they share the file through a local volume,
  unless they run in separate Linux time namespaces with different monotonic offsets.

Schema (version 3, kept in ``PRAGMA user_version``)::

    lease(name PK, holder_id, token, replica, host, since_iso, ttl, expires_mono, boot_id)
    tokens(name PK, last_token, releases)  -- never deleted: tokens are never reused
    runs(name, job, fire_key, token, outcome, record, attempt, PK(name, job, fire_key))
    members(name, replica_id, record, expires_mono, boot_id, PK(name, replica_id))
    controls(name, key, value, PK(name, key))

Version 2 added ``members`` and ``controls``, version 3 ``runs.attempt``; older files are
upgraded in place when first opened (rows written before attempts existed get ``''``, which
no attempt matches).

The fencing token of an acquisition is ``tokens.last_token + 1`` for that name, assigned in
the acquiring transaction; the ``tokens`` row outlives every release and expiry. ``runs.record``
is the :meth:`~scheduler.firing.runs.RunRecord.to_json` of the record; the other columns
index it and are written with it in the same statement (``outcome`` at claim, start and finish), so that
claim, start, finish and unclaim compare the claim's attempt and state in their ``WHERE``
clauses, inside their one transaction.

SQLite has no notifications, so :meth:`SqliteBackend.wait_for_change` polls
``PRAGMA data_version`` (which moves when another connection commits) every 20 ms and, when
it moved, compares the lease row and ``tokens.releases`` (bumped by every release, so an
acquire-and-release between two polls is not missed) with what it saw before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from scheduler.backends import DEFAULT_OP_TIMEOUT
from scheduler.backends.urls import MAX_URL_LENGTH, BackendURL, URLForm, redact, reveal
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import (
    BackendError,
    BackendPermanentError,
    BackendReadOnlyError,
    BackendSchemaError,
    BackendUnavailable,
    ClaimLost,
    ConfigError,
    LeaseLost,
    excerpt,
)
from scheduler.firing.runs import OUTCOMES, UNFINISHED, Retention, RunRecord, fire_key
from scheduler.leadership.lease import Holder, Lease, LeaseRecord, local_deadline
from scheduler.leadership.members import Member

#: 2 added members and controls, 3 added ``runs.attempt``; older files are upgraded in place.
SCHEMA_VERSION = 3

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

#: Seconds between two looks at the database while waiting for a lease change.
POLL_INTERVAL = 0.02

# One statement per entry: executescript() would commit on its own, outside our transaction.
_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS lease (
        name         TEXT PRIMARY KEY,
        holder_id    TEXT NOT NULL,
        token        INTEGER NOT NULL,
        replica      TEXT NOT NULL,
        host         TEXT NOT NULL,
        since_iso    TEXT NOT NULL,
        ttl          REAL NOT NULL,
        expires_mono REAL NOT NULL,
        boot_id      TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS tokens (
        name       TEXT PRIMARY KEY,
        last_token INTEGER NOT NULL,
        releases   INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS runs (
        name     TEXT NOT NULL,
        job      TEXT NOT NULL,
        fire_key INTEGER NOT NULL,
        token    INTEGER NOT NULL,
        outcome  TEXT NOT NULL,
        record   TEXT NOT NULL,
        attempt  TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (name, job, fire_key)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS members (
        name         TEXT NOT NULL,
        replica_id   TEXT NOT NULL,
        record       TEXT NOT NULL,
        expires_mono REAL NOT NULL,
        boot_id      TEXT NOT NULL,
        PRIMARY KEY (name, replica_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS controls (
        name  TEXT NOT NULL,
        key   TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (name, key)
    )
    """,
)

# The control key the preflight writes and deletes in one transaction (no operator key: a
# NUL cannot be typed on a command line).
_PROBE_KEY = "\x00preflight"
# OS errors of a path that will not take writes, and of a path that cannot be a database.
_READ_ONLY_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})
_PATH_ERRNOS = frozenset(
    {errno.ENOTDIR, errno.EISDIR, errno.ENOENT, errno.ELOOP, errno.ENAMETOOLONG, errno.EEXIST}
)

# Added by schema version 3; a version-1 or -2 file's runs table gains it in place.
_ADD_ATTEMPT = "ALTER TABLE runs ADD COLUMN attempt TEXT NOT NULL DEFAULT ''"

# Trimming deletes only these; a claimed or running record would make its fire look free.
_FINISHED = tuple(outcome for outcome in OUTCOMES if outcome not in UNFINISHED)
_FINISHED_SQL = ", ".join(f"'{outcome}'" for outcome in _FINISHED)


def read_boot_id() -> str:
    """The kernel's id of the current boot, or ``""`` where the platform has none."""
    try:
        return Path(BOOT_ID_PATH).read_text(encoding="ascii").strip()
    except OSError:
        return ""


_FORM = URLForm("sqlite", "sqlite:///relative/path.db or sqlite:////absolute/path.db")


def path_from_url(url: str | BackendURL) -> Path:
    """The absolute database path named by a ``sqlite:///`` URL.

    ``sqlite:///relative/path.db`` is relative to the current directory (resolved now, so a
    later ``chdir`` does not move the database); ``sqlite:////absolute/path.db`` is absolute.
    Percent-escapes in the path are decoded. The URL has no host, credentials or options.

    Raises:
        ConfigError: the URL is not of that form (key ``backend``).
    """
    text = reveal(url)
    if len(text) > MAX_URL_LENGTH:
        raise _FORM.error(
            text, f"the URL is {len(text)} characters long (at most {MAX_URL_LENGTH})"
        )
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise _FORM.error(text, "it has a control character")
    if text[: len("sqlite:///")].lower() != "sqlite:///":
        raise _FORM.error(text, "a SQLite URL has no host: three slashes, then the path")
    parts = urlsplit(text)
    if parts.query or parts.fragment or "?" in text or "#" in text:
        raise _FORM.error(text, "no ?query or #fragment is allowed (write '?' as %3F, '#' as %23)")
    try:
        raw = unquote(parts.path[1:], errors="strict")
    except UnicodeDecodeError:
        raise _FORM.error(text, "the path is not percent-encoded UTF-8") from None
    if not raw or raw.endswith("/"):
        raise _FORM.error(text, "it names no database file")
    if raw == ":memory:":
        raise _FORM.error(text, "an in-memory database cannot be shared by replicas; name a file")
    if "\x00" in raw:
        raise _FORM.error(text, "the path has a NUL character")
    return Path(os.path.abspath(raw))


@dataclass(frozen=True, slots=True)
class _LeaseRow:
    holder_id: str
    token: int
    replica: str
    host: str
    since_iso: str
    ttl: float
    expires_mono: float
    boot_id: str


class SqliteBackend:
    """A :class:`~scheduler.backends.base.LeaseBackend` on a local SQLite file.

    One connection per instance, shared by the instance's threads under a lock. The
    connection is opened (and the schema created) on first use, so constructing the backend
    never touches the filesystem; an unusable path surfaces from the first call (or
    :meth:`check`, :meth:`preflight`) as :class:`~scheduler.errors.BackendUnavailable` when
    retrying may help (a lock, an I/O error, a full disk), else as a
    :class:`~scheduler.errors.BackendPermanentError` (read-only, a newer schema, no file).

    Args:
        path: the database file; missing parent directories are created.
        url: the URL to name the backend by in messages.
        create: whether a missing file (and its directories) may be created, with the
            schema; only a replica (``baton run``) does. Without, the file must exist and
            hold a Baton database, else the first call raises
            :class:`~scheduler.errors.ConfigError`: the read and operator commands never
            create a fresh, empty database that would answer "no leader".
        op_timeout: seconds one call may wait for the write lock (SQLite's busy timeout) and
            for other threads using this instance.
        clock: the clock lease expiries are read from; its ``monotonic`` must be the host's
            shared monotonic clock when several processes use the file.
        boot_id: the boot id to stamp and compare leases with; read from the kernel when
            ``None``. Tests pass one to simulate a reboot.
    """

    def __init__(
        self,
        path: Path,
        *,
        url: str,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        clock: Clock = SYSTEM_CLOCK,
        boot_id: str | None = None,
        create: bool = True,
    ) -> None:
        if op_timeout <= 0:
            raise ConfigError("backend", f"op_timeout must be positive, got {op_timeout!r}")
        self.url = url
        self.path = path
        self.create = create
        self.op_timeout = op_timeout
        self.boot_id = read_boot_id() if boot_id is None else boot_id
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._busy_ms = -1
        self._closed = False
        # Counts commits made through this instance: PRAGMA data_version does not move for a
        # connection's own commits, so waiters sharing our connection are woken through this.
        self._changed = threading.Condition(threading.Lock())
        self._generation = 0

    @classmethod
    def from_url(
        cls,
        url: str | BackendURL,
        *,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        clock: Clock = SYSTEM_CLOCK,
        create: bool = True,
    ) -> SqliteBackend:
        """The backend for ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.

        Args:
            url: the URL.
            op_timeout: seconds one call may wait (see the class).
            clock: the clock lease expiries are read from.
            create: whether a missing database may be created (see the class).

        Raises:
            ConfigError: the URL is malformed (key ``backend``).
        """
        path = path_from_url(url)
        return cls(path, url=redact(reveal(url)), op_timeout=op_timeout, clock=clock, create=create)

    def __repr__(self) -> str:
        return f"SqliteBackend({self.url!r})"

    # -- lease -------------------------------------------------------------------------------

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Take the lease ``name`` for ``ttl`` seconds if it is free or expired.

        Returns:
            The new lease with the next fencing token; ``None`` if it is held.
        """
        _check_ttl(ttl)
        sent_at = self._clock.monotonic()
        with self._write() as conn:
            now = self._clock.monotonic()
            row = _lease_row(conn, name)
            if row is not None and not self._expired(row, now):
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
                    self.boot_id,
                ),
            )
        return Lease(
            name=name,
            holder=holder,
            token=token,
            ttl=ttl,
            sent_at=sent_at,
            deadline=local_deadline(sent_at, ttl),
        )

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` by its TTL from now, only if its holder and token still hold it.

        Raises:
            LeaseLost: reason ``released`` (no lease), ``not-holder`` (another holder or
                token) or ``expired``.
        """
        _check_ttl(lease.ttl)
        sent_at = self._clock.monotonic()
        with self._write() as conn:
            now = self._clock.monotonic()
            self._require_held(conn, lease, now)
            conn.execute(
                "UPDATE lease SET expires_mono = ?, ttl = ? WHERE name = ?",
                (now + lease.ttl, lease.ttl, lease.name),
            )
        return lease.renewed(sent_at)

    def release(self, lease: Lease) -> None:
        """Delete ``lease`` if its holder and token still hold it; a no-op otherwise."""
        with self._write() as conn:
            deleted = conn.execute(
                "DELETE FROM lease WHERE name = ? AND holder_id = ? AND token = ?",
                (lease.name, lease.holder.id, lease.token),
            ).rowcount
            if deleted:
                # Followers polling in wait_for_change compare this counter.
                conn.execute(
                    "UPDATE tokens SET releases = releases + 1 WHERE name = ?", (lease.name,)
                )

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        """Do nothing: SQLite pushes no notifications, so loss is found by the next renewal.

        The only ways to lose a lease here are expiry (which the holder's own local deadline
        foresees) and a takeover after expiry, so a watcher would add a polling thread for
        no earlier warning than the renew loop already gives.
        """
        del lease, on_lost

    def read(self, name: str) -> LeaseRecord | None:
        """The current holder of ``name``; ``None`` if the lease is free or expired."""
        with self._session() as conn:
            row = _lease_row(conn, name)
        now = self._clock.monotonic()
        if row is None or self._expired(row, now):
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
        version = self._data_version()
        generation = self._generation
        try:
            watched, releases = self._snapshot(name)
        except BackendUnavailable:
            watched, releases = None, -1
        while not self._closed:
            remaining = end - time.monotonic()
            if remaining <= 0:
                return
            current_generation = self._wait_local_commit(generation, min(POLL_INTERVAL, remaining))
            if watched is not None and self._expired(watched, self._clock.monotonic()):
                return
            current_version = self._data_version()
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
                or self._expired(row, self._clock.monotonic())
            ):
                return
            # Same holder (renewed), or a first holder of a lease that was free: watch it.
            watched, releases = row, current_releases

    # -- runs --------------------------------------------------------------------------------

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """Store ``run`` if ``lease`` is held and the fire is unclaimed; trim old history.

        Trimming deletes the job's finished runs beyond its newest ``retention.limit``, but
        only runs fired more than ``retention.protect`` seconds before ``run``; claimed and
        running records are never trimmed.

        Returns:
            ``run``; the stored record when ``run.attempt`` wrote it (a resend); ``None`` if
            another attempt claimed (``run.job``, ``run.scheduled_time``).

        Raises:
            LeaseLost: ``lease`` is not held (checked before the duplicate check).
        """
        key = run.key
        with self._write() as conn:
            self._require_held(conn, lease, self._clock.monotonic())
            existing = conn.execute(
                "SELECT attempt, record FROM runs WHERE name = ? AND job = ? AND fire_key = ?",
                (lease.name, run.job, key),
            ).fetchone()
            if existing is not None:
                attempt, record = existing
                if run.attempt and attempt == run.attempt:
                    return self._parse(run.job, [(record,)])[0]
                return None
            conn.execute(
                "INSERT INTO runs (name, job, fire_key, token, outcome, record, attempt) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (lease.name, run.job, key, run.token, run.outcome, run.to_json(), run.attempt),
            )
            (count,) = conn.execute(
                "SELECT count(*) FROM runs WHERE name = ? AND job = ?", (lease.name, run.job)
            ).fetchone()
            excess = int(count) - max(0, retention.limit)
            if excess > 0:
                cutoff = key - round(retention.protect * 1000)
                # The records beyond the newest ``limit``, of which only finished ones go.
                conn.execute(
                    f"DELETE FROM runs WHERE name = ? AND job = ? AND outcome IN ({_FINISHED_SQL})"
                    " AND fire_key IN (SELECT fire_key FROM runs WHERE name = ? AND job = ?"
                    " AND fire_key < ? ORDER BY fire_key LIMIT ?)",
                    (lease.name, run.job, lease.name, run.job, cutoff, excess),
                )
        return run

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        """Store ``run`` (``running``) over the ``claimed`` record of ``run.attempt``.

        The lease check and the update are one write transaction.

        Returns:
            ``run``.

        Raises:
            LeaseLost: ``lease`` is not held (checked first), as for :meth:`claim`.
            ClaimLost: reason ``gone`` (no record), ``other-attempt`` or ``not-claimed``
                (already started or finished).
        """
        with self._write() as conn:
            self._require_held(conn, lease, self._clock.monotonic())
            row = conn.execute(
                "SELECT attempt, outcome FROM runs WHERE name = ? AND job = ? AND fire_key = ?",
                (lease.name, run.job, run.key),
            ).fetchone()
            if row is None:
                raise ClaimLost(run.job, run.scheduled_time.isoformat(), "gone")
            if not run.attempt or row[0] != run.attempt:
                raise ClaimLost(run.job, run.scheduled_time.isoformat(), "other-attempt")
            if row[1] != "claimed":
                raise ClaimLost(run.job, run.scheduled_time.isoformat(), "not-claimed")
            conn.execute(
                "UPDATE runs SET outcome = ?, record = ? "
                "WHERE name = ? AND job = ? AND fire_key = ?",
                (run.outcome, run.to_json(), lease.name, run.job, run.key),
            )
        return run

    def finish(self, name: str, run: RunRecord) -> None:
        """Store the outcome of ``run`` over the record ``run.attempt`` wrote, if any."""
        if not run.attempt:
            return  # a record from before attempts: no attempt matches it
        with self._write() as conn:
            conn.execute(
                "UPDATE runs SET outcome = ?, record = ? "
                "WHERE name = ? AND job = ? AND fire_key = ? AND attempt = ?",
                (run.outcome, run.to_json(), name, run.job, run.key, run.attempt),
            )

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The run record of (``job``, ``scheduled_time``), or ``None``."""
        with self._session() as conn:
            row = conn.execute(
                "SELECT record FROM runs WHERE name = ? AND job = ? AND fire_key = ?",
                (name, job, fire_key(scheduled_time)),
            ).fetchone()
        return None if row is None else self._parse(job, [row])[0]

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Delete the record of ``run``'s fire if ``run.attempt`` wrote it and it is still
        ``claimed``."""
        if not run.attempt:
            return False
        with self._write() as conn:
            deleted = conn.execute(
                "DELETE FROM runs WHERE name = ? AND job = ? AND fire_key = ? AND attempt = ? "
                "AND outcome = 'claimed'",
                (name, run.job, run.key, run.attempt),
            ).rowcount
        return deleted > 0

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` run records of ``job``, newest fire first."""
        if limit <= 0:
            return []
        with self._session() as conn:
            rows = conn.execute(
                "SELECT record FROM runs WHERE name = ? AND job = ? ORDER BY fire_key DESC LIMIT ?",
                (name, job, limit),
            ).fetchall()
        return self._parse(job, rows)

    def _parse(self, job: str, rows: list[tuple[str]]) -> list[RunRecord]:
        try:
            return [RunRecord.from_json(record) for (record,) in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                self.url, f"corrupt run record for job {job!r}: {exc}"
            ) from exc

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys of ``job`` claimed with fire instants in ``[since, until]``."""
        with self._session() as conn:
            rows = conn.execute(
                "SELECT fire_key FROM runs WHERE name = ? AND job = ? AND fire_key BETWEEN ? AND ?",
                (name, job, fire_key(since), fire_key(until)),
            ).fetchall()
        return {int(key) for (key,) in rows}

    # -- presence and controls ------------------------------------------------------------

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Upsert ``member``'s presence, expiring ``ttl`` s from now (host monotonic clock)."""
        _check_ttl(ttl)
        with self._write() as conn:
            conn.execute(
                "INSERT INTO members (name, replica_id, record, expires_mono, boot_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, replica_id) DO UPDATE SET "
                "record = excluded.record, expires_mono = excluded.expires_mono, "
                "boot_id = excluded.boot_id",
                (
                    name,
                    member.replica_id,
                    member.to_json(),
                    self._clock.monotonic() + ttl,
                    self.boot_id,
                ),
            )

    def withdraw(self, name: str, replica_id: str) -> None:
        """Delete ``replica_id``'s presence record."""
        with self._write() as conn:
            conn.execute(
                "DELETE FROM members WHERE name = ? AND replica_id = ?", (name, replica_id)
            )

    def members(self, name: str) -> list[Member]:
        """Unexpired presence records, by replica id."""
        with self._session() as conn:
            rows = conn.execute(
                "SELECT record FROM members WHERE name = ? AND expires_mono > ? AND boot_id = ? "
                "ORDER BY replica_id",
                (name, self._clock.monotonic(), self.boot_id),
            ).fetchall()
        return [Member.from_json(record) for (record,) in rows]

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Set or delete the control ``key``."""
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM controls WHERE name = ? AND key = ?", (name, key))
            else:
                conn.execute(
                    "INSERT INTO controls (name, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
                    (name, key, value),
                )

    def controls(self, name: str) -> dict[str, str]:
        """Every control of cluster ``name``."""
        with self._session() as conn:
            rows = conn.execute("SELECT key, value FROM controls WHERE name = ?", (name,))
            return {str(key): str(value) for key, value in rows.fetchall()}

    # -- connection --------------------------------------------------------------------------

    def check(self) -> None:
        """Open the database if needed and take and drop the write lock.

        Taking the write lock proves more than a read would: that the file and its directory
        are writable and that no other process holds the lock for longer than ``op_timeout``.

        Raises:
            BackendUnavailable: the file stays locked, or an I/O error.
            BackendPermanentError: the file or its directory cannot be opened or written
                (:class:`~scheduler.errors.BackendReadOnlyError`), or has a schema this
                Baton does not know (:class:`~scheduler.errors.BackendSchemaError`).
        """
        with self._session() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

    def preflight(self, name: str) -> None:
        """Open the database (creating it and its schema if need be) and commit one write
        that leaves no trace: an inserted and deleted control of cluster ``name``.

        A file, directory or file system that takes no writes shows only at a write: a
        read-only file opens (read-only) and even takes the write lock.

        Raises:
            BackendUnavailable: locked for longer than ``op_timeout``, an I/O error.
            BackendReadOnlyError: the file, its directory or the file system is read-only.
            BackendSchemaError: a schema version this Baton does not know, or no database.
        """
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO controls (name, key, value) VALUES (?, ?, '')",
                (name, _PROBE_KEY),
            )
            conn.execute("DELETE FROM controls WHERE name = ? AND key = ?", (name, _PROBE_KEY))

    def close(self) -> None:
        """Close the connection and wake any waiter. Leases are left to expire."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        # A thread stuck in a call would keep the lock; close anyway after op_timeout.
        acquired = self._lock.acquire(timeout=self.op_timeout)
        try:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
        finally:
            if acquired:
                self._lock.release()

    # -- internals ---------------------------------------------------------------------------

    def _expired(self, row: _LeaseRow, now: float) -> bool:
        """Whether ``row`` no longer holds at monotonic time ``now``."""
        if row.boot_id != self.boot_id:
            return True  # written during another boot: its monotonic reading means nothing now
        if row.expires_mono <= now:
            return True
        # Further ahead than its own TTL: the clock restarted since (a reboot unseen by boot id).
        return row.expires_mono - now > row.ttl + 1e-6

    def _require_held(self, conn: sqlite3.Connection, lease: Lease, now: float) -> None:
        """Raise :class:`LeaseLost` unless ``lease`` is the live lease row."""
        row = _lease_row(conn, lease.name)
        if row is None:
            raise LeaseLost(lease.name, "released")
        if row.holder_id != lease.holder.id or row.token != lease.token:
            raise LeaseLost(lease.name, "not-holder")
        if self._expired(row, now):
            raise LeaseLost(lease.name, "expired")

    def _wait_local_commit(self, generation: int, timeout: float) -> int:
        """Sleep up to ``timeout`` or until this instance commits or closes; the generation."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._generation != generation or self._closed, timeout=timeout
            )
            return self._generation

    def _snapshot(self, name: str) -> tuple[_LeaseRow | None, int]:
        """The lease row of ``name`` and how many times that lease was ever released."""
        with self._session() as conn:
            row = _lease_row(conn, name)
            found = conn.execute("SELECT releases FROM tokens WHERE name = ?", (name,)).fetchone()
        return row, int(found[0]) if found else 0

    def _data_version(self) -> int:
        """``PRAGMA data_version``, or -1 when it cannot be read."""
        try:
            with self._session() as conn:
                return int(conn.execute("PRAGMA data_version").fetchone()[0])
        except BackendUnavailable:
            return -1

    @contextlib.contextmanager
    def _session(self) -> Iterator[sqlite3.Connection]:
        """The connection, held exclusively, with every SQLite error made a BackendError
        (transient or permanent, see :meth:`_error`)."""
        started = time.monotonic()
        if self._closed:
            raise BackendUnavailable(self.url, "backend is closed")
        if not self._lock.acquire(timeout=self.op_timeout):
            raise BackendUnavailable(
                self.url,
                f"another call on this backend did not finish within {self.op_timeout:g}s",
            )
        try:
            if self._closed:
                raise BackendUnavailable(self.url, "backend is closed")
            conn = self._connect()
            # Time spent waiting for the thread lock comes out of the busy timeout, so the
            # call as a whole stays within op_timeout.
            left = self.op_timeout - (time.monotonic() - started)
            busy_ms = max(1, int(left * 1000))
            if abs(busy_ms - self._busy_ms) > 5:
                conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
                self._busy_ms = busy_ms
            yield conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            self._lock.release()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        with self._session() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.rollback()
                raise
            conn.execute("COMMIT")
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    def _connect(self) -> sqlite3.Connection:
        """The open connection, opening the file and creating the schema on first use."""
        if self._conn is not None:
            return self._conn
        self._prepare_path()
        try:
            conn = sqlite3.connect(
                # mode=rw: fails, instead of creating the file, should it vanish meanwhile.
                self.path if self.create else f"file:{quote(str(self.path))}?mode=rw",
                uri=not self.create,
                timeout=self.op_timeout,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._open_failure(exc) from exc
        try:
            self._busy_ms = int(self.op_timeout * 1000)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            if not self.create:
                self._require_schema(conn)
            mode = self._switch_to_wal(conn)
            if str(mode).lower() != "wal":
                raise BackendUnavailable(
                    self.url, f"cannot switch {self.path} to WAL journal mode (got {mode!r})"
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            self._create_schema(conn)
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._open_failure(exc) from exc
            raise
        self._conn = conn
        return conn

    def _switch_to_wal(self, conn: sqlite3.Connection) -> str:
        """Put the file in WAL mode (a no-op once it is); the resulting journal mode.

        While the file is new, connections opening it together contend for the switch, and
        SQLite answers that contention with an immediate SQLITE_BUSY, without calling the busy
        handler, so the retrying up to ``op_timeout`` is done here.
        """
        deadline = time.monotonic() + self.op_timeout
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        """Create or upgrade the tables once; many processes may race here, the write lock
        orders them."""
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise BackendSchemaError(
                    self.url,
                    f"{self.path} has schema version {version}, newer than this Baton "
                    f"supports ({SCHEMA_VERSION}); upgrade Baton",
                )
            if version not in (0, 1, 2, SCHEMA_VERSION):
                raise BackendSchemaError(
                    self.url, f"{self.path} has unknown schema version {version}"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            # Asked, not inferred from the version: the runs table CREATE TABLE just made has
            # the column already, and so has a file another process upgraded after our first
            # read of user_version; adding it twice would fail.
            columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(runs)")}
            if "attempt" not in columns:
                conn.execute(_ADD_ATTEMPT)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.rollback()
            raise

    def _require_schema(self, conn: sqlite3.Connection) -> None:
        """Refuse, without writing, a file that holds no Baton database (``create=False``)."""
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 0:
            raise ConfigError(
                "backend",
                f"{excerpt(str(self.path))} holds no Baton database (no replica has run on "
                "it: check the path, or start one with `baton run`)",
            )

    def _prepare_path(self) -> None:
        """Create missing parent directories; refuse paths SQLite could only fail on vaguely.

        Without ``create``, a missing file is a :class:`ConfigError` and nothing is created.
        """
        if not self.create:
            if not self.path.exists():
                raise ConfigError(
                    "backend",
                    f"no database at {excerpt(str(self.path))} (read commands never create "
                    "one: check the path and the current directory, or start a replica with "
                    "`baton run`)",
                )
            if self.path.is_dir():
                raise ConfigError(
                    "backend", f"{excerpt(str(self.path))} is a directory, not a database file"
                )
            return
        parent = self.path.parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            # mkdir says "File exists" when a component is a file; name that component.
            blocker = next((p for p in (parent, *parent.parents) if p.exists()), None)
            if blocker is not None and not blocker.is_dir():
                reason = f"{blocker} is a file, not a directory"
            else:
                reason = _os_reason(exc)
            raise _os_error(
                exc, self.url, f"cannot create directory {parent} for the database: {reason}"
            ) from exc
        if self.path.is_dir():
            raise BackendPermanentError(
                self.url, f"cannot open database {self.path}: it is a directory, not a file"
            )

    def _open_failure(self, exc: sqlite3.Error) -> BackendError:
        """Why the file could not be opened, with the OS's reason when there is one, as the
        error to raise: permanent when the file or directory cannot be written or is no
        file (see :func:`_os_error`), transient otherwise."""
        # SQLite says only "unable to open database file"; asking the OS names the cause.
        try:
            fd = os.open(self.path, os.O_RDWR | (os.O_CREAT if self.create else 0), 0o666)
            os.close(fd)
        except OSError as os_exc:
            reason = f"cannot open database {self.path}: {_os_reason(os_exc)}"
            return _os_error(os_exc, self.url, reason)
        if not os.access(self.path.parent, os.W_OK | os.X_OK):
            return BackendReadOnlyError(
                self.url,
                f"cannot open database {self.path}: directory {self.path.parent} is not "
                "writable (WAL mode creates -wal and -shm files beside the database)",
            )
        return self._error(exc, f"cannot open database {self.path}: ")

    def _error(self, exc: sqlite3.Error, prefix: str = "") -> BackendError:
        """``exc`` as the error to raise: read-only, not a (usable) database and corruption
        are permanent; a lock held too long, I/O errors and a full disk are transient."""
        message = prefix + self._describe(exc)
        code = getattr(exc, "sqlite_errorname", "")
        if code.startswith("SQLITE_READONLY") and code != "SQLITE_READONLY_RECOVERY":
            return BackendReadOnlyError(self.url, message)
        if code.startswith("SQLITE_NOTADB"):
            return BackendSchemaError(self.url, message)
        if code.startswith("SQLITE_CORRUPT"):
            return BackendPermanentError(self.url, message)
        return BackendUnavailable(self.url, message)

    def _describe(self, exc: sqlite3.Error) -> str:
        """A one-line explanation of a SQLite error, naming the usual causes."""
        code = getattr(exc, "sqlite_errorname", "")
        text = str(exc) or type(exc).__name__
        if _is_busy(exc):
            return (
                f"database {self.path} stayed locked by another connection for more than "
                f"op_timeout ({self.op_timeout:g}s)"
            )
        if code.startswith("SQLITE_READONLY"):
            return f"database {self.path} is read-only: {text}"
        if code.startswith(("SQLITE_IOERR", "SQLITE_FULL", "SQLITE_CANTOPEN")):
            return f"I/O error on database {self.path}: {text}"
        if code.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return f"{self.path} is not a usable Baton database: {text}"
        return f"database {self.path}: {text}"


def _lease_row(conn: sqlite3.Connection, name: str) -> _LeaseRow | None:
    row = conn.execute(
        "SELECT holder_id, token, replica, host, since_iso, ttl, expires_mono, boot_id "
        "FROM lease WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    return _LeaseRow(
        holder_id=str(row[0]),
        token=int(row[1]),
        replica=str(row[2]),
        host=str(row[3]),
        since_iso=str(row[4]),
        ttl=float(row[5]),
        expires_mono=float(row[6]),
        boot_id=str(row[7]),
    )


def _is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means another connection holds a lock we need."""
    code = getattr(exc, "sqlite_errorname", "")
    return code.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc)


def _check_ttl(ttl: float) -> None:
    if not ttl > 0:
        raise ValueError(f"lease ttl must be positive seconds, got {ttl!r}")


def _os_error(exc: OSError, url: str, message: str) -> BackendError:
    """The error for an OS refusal: permanent when retrying cannot help (permissions, a
    read-only file system, a path that cannot be a file), transient otherwise (an I/O error,
    a full disk, too many open files)."""
    if exc.errno in _READ_ONLY_ERRNOS:
        return BackendReadOnlyError(url, message)
    if exc.errno in _PATH_ERRNOS:
        return BackendPermanentError(url, message)
    return BackendUnavailable(url, message)


def _os_reason(exc: OSError) -> str:
    """The OS's words for ``exc`` ("Permission denied", "Not a directory", ...)."""
    if exc.strerror:
        return exc.strerror
    if exc.errno is not None:
        return os.strerror(exc.errno) or errno.errorcode.get(exc.errno, str(exc))
    return str(exc)


__all__ = ["SCHEMA_VERSION", "SqliteBackend", "path_from_url", "read_boot_id"]
