"""One SQLite connection shared by a backend's threads: opening the file, transactions, and
every SQLite error made a Baton error.

Every replica process opens the same database file. Each write is a single ``BEGIN
IMMEDIATE`` transaction (:meth:`Database.write`), which takes SQLite's write lock before
reading, so every compare-and-act is atomic across processes. The file runs in WAL mode with
``synchronous=NORMAL``: a committed transaction survives the crash (even a ``kill -9``) of any
process; only an operating-system crash or power loss may drop the last few commits.

**The lease goes first.** The one connection is held by one call at a time, and a batch of
claims is a transaction per :data:`~scheduler.backends.sqlite.ledger.BATCH_SIZE` runs
(~15 ms for 1,000). A lease call (acquire, renew, release) asks for the connection as
*urgent* (:meth:`Database.session`): while one waits, no other waiting call takes the
connection, however long it has waited, so a renewal waits for the one transaction in
progress at most, never for a whole batch or a queue of them (a plain lock wakes any
waiter, and a batch thread retaking it between its chunks could keep a renewal waiting).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from scheduler.backends.sqlite.errors import (
    is_busy,
    open_failure,
    os_error,
    os_reason,
    sqlite_error,
)
from scheduler.backends.sqlite.schema import create_schema, require_schema
from scheduler.errors import (
    BackendError,
    BackendPermanentError,
    BackendUnavailable,
    ConfigError,
    excerpt,
)


class Database:
    """The connection to one database file, held exclusively by one call at a time.

    The connection is opened (and the schema created) on first use, so constructing this
    never touches the filesystem.

    Args:
        path: the database file; missing parent directories are created (with ``create``).
        url: the URL to name the database by in messages.
        create: whether a missing file (and its directories) may be created, with the schema.
        op_timeout: seconds one call may wait for the write lock (SQLite's busy timeout) and
            for other threads using this instance.
    """

    def __init__(self, path: Path, *, url: str, create: bool, op_timeout: float) -> None:
        self.path = path
        self.url = url
        self.create = create
        self.op_timeout = op_timeout
        # Who holds the connection, and who waits for it: one call at a time (_busy); a
        # waiting call takes it only when no urgent call (the lease's) waits, unless it is
        # urgent itself. A plain lock could not: it wakes any waiter.
        self._turns = threading.Condition(threading.Lock())
        self._busy = False
        self._urgent = 0
        self._waiting = 0
        self._conn: sqlite3.Connection | None = None
        self._busy_ms = -1
        self._closed = False
        # Counts commits made through this instance: PRAGMA data_version does not move for a
        # connection's own commits, so waiters sharing our connection are woken through this.
        self._changed = threading.Condition(threading.Lock())
        self._generation = 0

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    @property
    def waiting(self) -> tuple[int, int]:
        """How many calls wait for the connection now: (urgent ones, all)."""
        with self._turns:
            return self._urgent, self._waiting

    @property
    def generation(self) -> int:
        """How many write transactions this instance has committed."""
        return self._generation

    @contextlib.contextmanager
    def session(self, *, urgent: bool = False) -> Iterator[sqlite3.Connection]:
        """The connection, held exclusively, with every SQLite error made a BackendError.

        Args:
            urgent: the lease's calls: callers arriving while an urgent one waits let it
                have the connection first (see the module docstring).

        Raises:
            BackendUnavailable: closed, or another call held the connection past op_timeout,
                or a transient SQLite error (see :func:`~.errors.sqlite_error`).
            BackendPermanentError: a permanent SQLite error.
        """
        started = time.monotonic()
        if self._closed:
            raise BackendUnavailable(self.url, "backend is closed")
        if not self._take(urgent, started + self.op_timeout):
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
            raise sqlite_error(exc, self.url, self.path, self.op_timeout) from exc
        finally:
            self._give()

    @contextlib.contextmanager
    def write(self, *, urgent: bool = False) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error.

        Args:
            urgent: as for :meth:`session`.
        """
        with self.session(urgent=urgent) as conn:
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

    def _take(self, urgent: bool, deadline: float) -> bool:
        """Take the connection by ``deadline`` (monotonic); whether it was taken.

        An urgent caller takes it as soon as it is free; any other caller only when, in
        addition, no urgent caller is waiting.
        """
        with self._turns:
            self._waiting += 1
            if urgent:
                self._urgent += 1
            try:
                taken = self._turns.wait_for(
                    lambda: not self._busy and (urgent or self._urgent == 0),
                    timeout=max(0.0, deadline - time.monotonic()),
                )
                self._busy = self._busy or taken
                return taken
            finally:
                self._waiting -= 1
                if urgent:
                    self._urgent -= 1
                self._turns.notify_all()  # an urgent caller gone: the others may go

    def _give(self) -> None:
        """Give the connection back, to whoever goes next."""
        with self._turns:
            self._busy = False
            self._turns.notify_all()

    def data_version(self) -> int:
        """``PRAGMA data_version`` (moves when another connection commits), or -1 when it
        cannot be read."""
        try:
            with self.session() as conn:
                return int(conn.execute("PRAGMA data_version").fetchone()[0])
        except BackendUnavailable:
            return -1

    def wait_local_commit(self, generation: int, timeout: float) -> int:
        """Sleep up to ``timeout`` or until this instance commits or closes; the generation."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._generation != generation or self._closed, timeout=timeout
            )
            return self._generation

    def check(self) -> None:
        """Open the database if needed and take and drop the write lock.

        Raises:
            BackendUnavailable: the file stays locked, or an I/O error.
            BackendPermanentError: the file cannot be opened or written, or has a schema
                this Baton does not know.
        """
        with self.session() as conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")

    def close(self) -> None:
        """Close the connection and wake any waiter."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        # A thread stuck in a call would keep the connection; close anyway after op_timeout.
        acquired = self._take(True, time.monotonic() + self.op_timeout)
        try:
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
        finally:
            if acquired:
                self._give()

    # -- opening -----------------------------------------------------------------------------

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
                require_schema(conn, self.path)
            mode = self._switch_to_wal(conn)
            if str(mode).lower() != "wal":
                raise BackendUnavailable(
                    self.url, f"cannot switch {self.path} to WAL journal mode (got {mode!r})"
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            create_schema(conn, self.url, self.path)
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._open_failure(exc) from exc
            raise
        self._conn = conn
        return conn

    def _open_failure(self, exc: sqlite3.Error) -> BackendError:
        return open_failure(exc, self.url, self.path, self.create, self.op_timeout)

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
                if not is_busy(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

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
                reason = os_reason(exc)
            raise os_error(
                exc, self.url, f"cannot create directory {parent} for the database: {reason}"
            ) from exc
        if self.path.is_dir():
            raise BackendPermanentError(
                self.url, f"cannot open database {self.path}: it is a directory, not a file"
            )


__all__ = ["Database"]
