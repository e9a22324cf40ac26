"""Connections to the server: bounded pools, every call bounded by ``op_timeout``, the schema
checked (or created) once.

**Two pools, so nothing starves the lease.** The lease's calls (acquire, renew, release)
have a connection of their own (:attr:`Database.lease`), never queued behind claims; the
ledger, presence, controls and reads share a small bounded pool (:attr:`Database.work`):
a call that finds every connection busy waits up to ``op_timeout`` for one, then fails as
:class:`~scheduler.errors.BackendUnavailable` — never an unbounded number of connections.

**Bounded calls.** Every connection is autocommit (each statement its own short
transaction, so nothing holds a lock or a PgBouncer server connection between calls) and
opened with ``connect_timeout`` (libpq counts it in whole seconds, at least 2), TCP
keepalives and ``tcp_user_timeout`` (a dead peer is noticed in about ``op_timeout``, not
when TCP gives up after minutes), and — unless the URL says ``pgbouncer=true``, which
forwards no startup options — ``statement_timeout``. Neither the server's timeout nor TCP
notices a server that is alive but stopped (``SIGSTOP``, a frozen VM): the
:class:`Watchdog` does, by shutting down the socket of a call still running at its
deadline, which makes psycopg return at once with an error. A connection that failed is
closed and replaced on the next call, and an idle connection the server ended meanwhile
(a restart, ``pg_terminate_backend``) is noticed before it is used and replaced; Baton
never retries inside a call.

**PgBouncer (transaction pooling).** With ``pgbouncer=true`` Baton keeps no session state:
no startup options, no server-side prepared statements (``prepare_threshold=None``), no
``SET``, no ``LISTEN`` (:mod:`.lease` polls instead). Every call is one autocommit
statement, a transaction of its own, so any server connection may serve it.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg

from scheduler.backends.postgresql import schema as ddl
from scheduler.backends.postgresql.errors import translate
from scheduler.backends.postgresql.url import PostgresTarget
from scheduler.errors import BackendSchemaError, BackendUnavailable

#: Connections of the shared pool: a replica's concurrent calls are a claim or start batch,
#: an outcome batch, presence and reads; more would only queue on the server's locks.
WORK_CONNECTIONS = 4
#: Seconds of TCP idleness before the first keepalive probe (libpq counts whole seconds).
KEEPALIVE_IDLE = 1


def conninfo(target: PostgresTarget, op_timeout: float) -> dict[str, Any]:
    """The libpq connection parameters for ``target``, bounded by ``op_timeout``."""
    params: dict[str, Any] = {
        "host": ",".join(host for host, _ in target.hosts),
        "port": ",".join(str(port) for _, port in target.hosts),
        "dbname": target.dbname,
        "application_name": target.application_name,
        "connect_timeout": max(2, math.ceil(op_timeout)),
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE,
        "keepalives_interval": 1,
        "keepalives_count": max(1, math.ceil(op_timeout)),
        "tcp_user_timeout": max(1, round(op_timeout * 1000)),
        "target_session_attrs": target.target_session_attrs,
        "sslmode": target.sslmode,
    }
    if target.user:
        params["user"] = target.user
    if target.password is not None:
        params["password"] = target.password
    for option in ("sslrootcert", "sslcert", "sslkey"):
        value = getattr(target, option)
        if value is not None:
            params[option] = value
    if not target.pgbouncer:
        params["options"] = f"-c statement_timeout={max(1, round(op_timeout * 1000))}"
    return params


class Watchdog:
    """One thread that cuts calls still running at their deadline (see the module
    docstring): it shuts the connection's socket down, which fails the call at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int]] = []
        self._armed: dict[int, int] = {}  # handle -> socket fd
        self._fired: set[int] = set()
        self._counter = itertools.count(1)
        self._thread: threading.Thread | None = None

    def arm(self, fd: int, deadline: float) -> int:
        """Watch the socket ``fd`` until :meth:`disarm`; cut it at monotonic ``deadline``."""
        with self._lock:
            handle = next(self._counter)
            self._armed[handle] = fd
            heapq.heappush(self._heap, (deadline, handle))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="baton-postgresql-watchdog", daemon=True
                )
                self._thread.start()
            self._wake.notify()
            return handle

    def disarm(self, handle: int) -> bool:
        """Stop watching; whether the deadline had already cut the call."""
        with self._lock:
            self._armed.pop(handle, None)
            if handle in self._fired:
                self._fired.discard(handle)
                return True
            return False

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                deadline, handle = self._heap[0]
                left = deadline - time.monotonic()
                if left > 0:
                    self._wake.wait(left)
                    continue
                heapq.heappop(self._heap)
                fd = self._armed.pop(handle)
                self._fired.add(handle)
                # The caller cannot close the socket meanwhile: it disarms under this lock.
                with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
                    sock.shutdown(socket.SHUT_RDWR)


def _dropped(conn: psycopg.Connection[Any]) -> bool:
    """Whether an idle connection was ended by the server (a restart,
    ``pg_terminate_backend``, an idle timeout): it has something to read, which for a
    connection that sent nothing (and never listens) can only be the goodbye. Checked
    before each use, so a connection the server dropped while idle is replaced instead of
    failing the next call."""
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.Error):
        return True
    return bool(readable)


#: The process's one watchdog.
WATCHDOG = Watchdog()


class Pool:
    """At most ``size`` autocommit connections; a call waits up to ``op_timeout`` for one.

    Args:
        target: the server(s).
        op_timeout: seconds a call may take (waiting for a connection, then running).
        size: the most connections.
        url: the redacted URL, for messages.
        on_connect: called with each new connection before its first use (the schema
            check); its errors fail the call.
    """

    def __init__(
        self,
        target: PostgresTarget,
        op_timeout: float,
        size: int,
        url: str,
        on_connect: Any = None,
    ) -> None:
        self._target = target
        self._op_timeout = op_timeout
        self._size = size
        self._url = url
        self._on_connect = on_connect
        self._idle: list[psycopg.Connection[Any]] = []
        self._open = 0
        self._turns = threading.Condition()
        self._closed = False

    @contextlib.contextmanager
    def call(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one call, its statements cut at ``op_timeout``; every psycopg
        error raised as a :class:`~scheduler.errors.BackendError`."""
        deadline = time.monotonic() + self._op_timeout
        conn = self._take(deadline)
        handle = 0
        ok = False
        try:
            if conn is None:
                conn = self._connect()
            handle = WATCHDOG.arm(conn.pgconn.socket, deadline)
            yield conn
            ok = True
        except psycopg.Error as exc:
            cut = WATCHDOG.disarm(handle) if handle else False
            handle = 0
            raise translate(exc, self._url, timed_out=cut) from exc
        finally:
            if handle:
                ok = not WATCHDOG.disarm(handle) and ok
            self._give(conn, ok)

    def _take(self, deadline: float) -> psycopg.Connection[Any] | None:
        """An idle connection, or ``None`` when the caller may open one; waits for one."""
        with self._turns:
            while True:
                if self._closed:
                    raise BackendUnavailable(self._url, "backend is closed")
                while self._idle:
                    conn = self._idle.pop()
                    if not _dropped(conn):
                        return conn
                    self._open -= 1
                    with contextlib.suppress(Exception):
                        conn.close()
                if self._open < self._size:
                    self._open += 1
                    return None
                left = deadline - time.monotonic()
                if left <= 0 or not self._turns.wait(left):
                    raise BackendUnavailable(
                        self._url,
                        f"all {self._size} connections stayed busy for op_timeout "
                        f"({self._op_timeout:g}s)",
                    )

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            conn: psycopg.Connection[Any] = psycopg.Connection.connect(
                **conninfo(self._target, self._op_timeout),
                autocommit=True,
                prepare_threshold=None if self._target.pgbouncer else 5,
            )
        except psycopg.Error as exc:
            raise translate(exc, self._url) from exc
        try:
            if self._on_connect is not None:
                self._on_connect(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _give(self, conn: psycopg.Connection[Any] | None, ok: bool) -> None:
        with self._turns:
            if conn is not None and ok and not self._closed and not conn.closed:
                self._idle.append(conn)
            else:
                self._open -= 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
            self._turns.notify()

    def close(self) -> None:
        """Close the idle connections; connections in use close when given back."""
        with self._turns:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._turns.notify_all()
        for conn in idle:
            with contextlib.suppress(Exception):
                conn.close()


class Database:
    """The server, as Baton uses it: the lease's pool, the shared pool, the schema.

    Args:
        target: the parsed URL.
        op_timeout: seconds any call may take.
        create: whether a missing schema may be created (a replica, and the URL allows it).
    """

    def __init__(self, target: PostgresTarget, op_timeout: float, *, create: bool) -> None:
        self.target = target
        self.url = target.shown
        self.schema = target.schema
        self.op_timeout = op_timeout
        self._create = create and target.create_schema
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self.lease = Pool(target, op_timeout, 1, self.url, self._ensure_schema)
        self.work = Pool(target, op_timeout, WORK_CONNECTIONS, self.url, self._ensure_schema)

    def _ensure_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Check the schema's version once per backend; create it when missing and allowed.

        Raises:
            BackendSchemaError: missing (and not to be created), older or newer.
        """
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            try:
                version = self._version(conn)
                if version is None and self._create:
                    self._create_schema(conn)
                    version = self._version(conn)
            except psycopg.Error as exc:
                raise translate(exc, self.url) from exc
            if version is None:
                why = (
                    "and create_schema=false: apply `baton schema --print-sql` first"
                    if not self.target.create_schema
                    else "(no replica has run on it: start one with `baton run`, or apply "
                    "`baton schema --print-sql`)"
                )
                raise BackendSchemaError(
                    self.url, f"schema {self.schema} has no Baton tables {why}"
                )
            if version != ddl.SCHEMA_VERSION:
                newer = version > ddl.SCHEMA_VERSION
                raise BackendSchemaError(
                    self.url,
                    f"schema {self.schema} has Baton schema version {version}, "
                    + (
                        f"newer than this Baton supports ({ddl.SCHEMA_VERSION}): upgrade Baton"
                        if newer
                        else f"older than this Baton's ({ddl.SCHEMA_VERSION}): apply "
                        "`baton schema --print-sql`"
                    ),
                )
            self._schema_ready = True

    def _version(self, conn: psycopg.Connection[Any]) -> int | None:
        """The schema version in ``meta``; ``None`` when there is no such table."""
        found = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL", (f"{self.schema}.meta",)
        ).fetchone()
        if not found or not found[0]:
            return None
        row = conn.execute(
            f"SELECT value FROM {self.schema}.meta WHERE key = 'schema_version'"
        ).fetchone()
        if row is None:
            return None
        try:
            return int(row[0])
        except ValueError:
            raise BackendSchemaError(
                self.url, f"schema {self.schema} has an unreadable version {row[0]!r}"
            ) from None

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        """Create every table and function in one transaction; replicas starting together
        queue on a transaction-scoped advisory lock (PgBouncer-safe) and find it done."""
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"baton:{self.schema}",))
            if self._version(conn) is not None:
                return
            for statement in ddl.statements(self.schema):
                conn.execute(statement)

    def close(self) -> None:
        """Close every connection."""
        self.lease.close()
        self.work.close()


__all__ = ["WATCHDOG", "WORK_CONNECTIONS", "Database", "Pool", "Watchdog", "conninfo"]
