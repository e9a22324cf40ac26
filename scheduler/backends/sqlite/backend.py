"""The SQLite backend's façade: one object with every role, each kept by its own module."""

from __future__ import annotations

from pathlib import Path

from scheduler.backends.base import DEFAULT_OP_TIMEOUT
from scheduler.backends.composite import RoleBackend
from scheduler.backends.rules import check_op_timeout
from scheduler.backends.sqlite.controls import ControlTable
from scheduler.backends.sqlite.database import Database
from scheduler.backends.sqlite.lease import LeaseTable, read_boot_id
from scheduler.backends.sqlite.ledger import RunTable
from scheduler.backends.sqlite.presence import MemberTable
from scheduler.backends.sqlite.url import path_from_url
from scheduler.backends.urls import BackendURL, redact, reveal
from scheduler.clock import SYSTEM_CLOCK, Clock


class SqliteBackend(RoleBackend):
    """A :class:`~scheduler.backends.base.Backend` on a local SQLite file; the role methods
    are forwarded (:class:`~scheduler.backends.composite.RoleBackend`) to one table each.

    One connection per instance, shared by the instance's threads under a lock. The
    connection is opened (and the schema created) on first use, so constructing the backend
    never touches the filesystem; an unusable path surfaces from the first call (or
    :meth:`check`, :meth:`preflight`) as :class:`~scheduler.errors.BackendUnavailable` when
    retrying may help (a lock, an I/O error, a full disk), else as a
    :class:`~scheduler.errors.BackendPermanentError` (read-only, a newer schema, no file).
    It has no :class:`~scheduler.backends.base.LeaseNotifier`: a lease is lost here only by
    expiry (which the holder's own local deadline foresees) and a takeover after it, so a
    watcher would add a polling thread for no earlier warning than the renew loop gives.

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
        check_op_timeout(op_timeout)
        self.url = url
        self.path = path
        self.create = create
        self.op_timeout = op_timeout
        self.boot_id = read_boot_id() if boot_id is None else boot_id
        self._db = Database(path, url=url, create=create, op_timeout=op_timeout)
        leases = LeaseTable(self._db, clock, self.boot_id)
        self._control_table = ControlTable(self._db)
        super().__init__(
            leases=leases,
            runs=RunTable(self._db, leases, clock),
            presence=MemberTable(self._db, clock, self.boot_id),
            controls=self._control_table,
        )

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

    # -- preflight and lifetime ----------------------------------------------------------------

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
        self._db.check()

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
        self._control_table.probe(name)

    def close(self) -> None:
        """Close the connection and wake any waiter. Leases are left to expire."""
        self._db.close()


__all__ = ["SqliteBackend"]
