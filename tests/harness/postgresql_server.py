"""A real, throw-away PostgreSQL cluster on a loopback port, for contract and fault tests.

Each :class:`PostgresServer` is its own cluster: ``initdb`` into a fresh temp dir, then the
``postgres`` binary itself as the child process (no ``pg_ctl`` in between, so :attr:`pid` is the
postmaster), listening on ``127.0.0.1`` only, with its Unix socket in the temp dir. The Debian
system cluster and systemd are never touched. ``initdb`` and ``postgres`` refuse to run as
root, so when the tests run as root the server runs as the ``postgres`` OS user.

Authentication is SCRAM over TCP (the PostgreSQL 14+ default), with:

* the superuser ``postgres`` (password :attr:`PostgresServer.superuser_password`), which the
  fault helpers (:meth:`~PostgresServer.execute`, :meth:`~PostgresServer.terminate`) use;
* the application role ``baton`` owning the database ``baton`` (password ``secret``), so
  :meth:`~PostgresServer.url` is ``postgresql://baton:secret@127.0.0.1:PORT/baton``;
* :meth:`~PostgresServer.create_role` for roles with only the GRANTs a test gives them.

Data survives :meth:`~PostgresServer.kill` (``fsync`` is off for speed, but a killed process
loses nothing the kernel already has): :meth:`~PostgresServer.restart` runs crash recovery and
brings back every committed row. ``wal_level=replica`` and a replication line in ``pg_hba.conf``
let :meth:`~PostgresServer.make_standby` clone an asynchronous streaming standby with
``pg_basebackup -R``, which :meth:`~PostgresServer.promote` turns into a primary on a new
timeline: the failover a fencing token must survive.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql

from tests.harness.process_server import HOST, ProcessServer
from tests.harness.redis_server import TlsFiles

#: The OS user the server runs as when the tests run as root (initdb refuses root).
OS_USER = "postgres"
#: The database superuser, and the application role that owns the application database.
SUPERUSER = "postgres"
SUPERUSER_PASSWORD = "postgres-secret"
APP_USER = "baton"
APP_PASSWORD = "secret"
APP_DATABASE = "baton"
#: The database every cluster has, used before the application database exists.
MAINTENANCE_DATABASE = "postgres"

#: Seconds a server may take to accept connections after starting (crash recovery and a
#: standby's base backup included), and to exit after a signal.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: Seconds the harness's own connections may take to connect (libpq rounds below 2 up to 2).
CONNECT_TIMEOUT = 2

#: Appended to ``postgresql.conf`` by initdb time, so a standby cloned from it inherits them.
#: Per-instance settings (port, addresses, socket dir) are command-line flags instead: a
#: standby's copied ``postgresql.conf`` must not carry the primary's port.
SERVER_SETTINGS = {
    # Speed: a test cluster is thrown away; a killed *process* still loses nothing.
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    # The chaos suite opens many connections (replicas, pools, fault injectors).
    "max_connections": "200",
    # Streaming replication, for make_standby (asynchronous: synchronous_standby_names unset).
    "wal_level": "replica",
    "max_wal_senders": "10",
    "wal_keep_size": "128MB",
    "hot_standby": "on",
    # A standby retries its primary quickly after a fault.
    "wal_retrieve_retry_interval": "200ms",
    # Logs that say what happened and when, to stderr (the harness's log file).
    "logging_collector": "off",
    "log_line_prefix": "'%m [%p] %q%u@%d %a '",
    "log_connections": "off",
    "password_encryption": "'scram-sha-256'",
    "timezone": "'UTC'",
}

PG_HBA = f"""\
# Written by tests/harness/postgresql_server.py: loopback only, SCRAM over TCP.
local   all          all                      trust
host    all          all          {HOST}/32   scram-sha-256
host    replication  all          {HOST}/32   scram-sha-256
"""


def postgres_bindir() -> Path:
    """The directory of ``initdb``, ``postgres`` and ``pg_basebackup``; fails loudly if none.

    In order: ``$BATON_PG_BINDIR``, ``pg_config --bindir``, the highest
    ``/usr/lib/postgresql/*/bin`` (Debian's layout), then ``initdb`` on ``PATH``.
    """
    candidates: list[Path] = []
    if env := os.environ.get("BATON_PG_BINDIR"):
        candidates.append(Path(env))
    if pg_config := shutil.which("pg_config"):
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass

    def version(path: str) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", Path(path).parent.name))

    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += [Path(d) for d in debian]
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for directory in candidates:
        if all((directory / b).is_file() for b in ("initdb", "postgres", "pg_basebackup")):
            return directory
    raise RuntimeError(
        "PostgreSQL server binaries (initdb, postgres, pg_basebackup) not found; the "
        "PostgreSQL tests need a real server (apt-get install postgresql, or set "
        "BATON_PG_BINDIR to the directory holding them)"
    )


def as_server_user() -> dict[str, Any]:
    """``subprocess`` keyword arguments that run a child as :data:`OS_USER` when we are root."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise RuntimeError(
            f"running as root, and there is no {OS_USER!r} OS user to run PostgreSQL as "
            "(initdb and postgres refuse root); apt-get install postgresql creates it"
        ) from None
    return {"user": OS_USER, "group": OS_USER, "extra_groups": []}


def give_to_server_user(path: Path) -> None:
    """Make ``path`` (a dir or file the harness created) belong to :data:`OS_USER` if root."""
    if os.geteuid() == 0:
        shutil.chown(path, user=OS_USER, group=OS_USER)


def _process_group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` still runs (a zombie counts as gone)."""
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            text = Path(stat).read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


class PostgresServer(ProcessServer):
    """One PostgreSQL cluster (postmaster child process) on ``127.0.0.1:port``.

    Args:
        port: the port to listen on; a free one when ``None``.
        primary: if given, this server is an asynchronous streaming standby of ``primary``,
            cloned with ``pg_basebackup -R`` on first start (use :meth:`make_standby`).
        settings: extra ``postgresql.conf`` settings, e.g. ``{"max_connections": "50"}``,
            passed as ``-c name=value`` flags on every start.
        tls: a certificate and key for the server (TCP connections then offer TLS; pass
            ``settings={"ssl": "on"}``), copied into the data directory at initdb.
    """

    name = "PostgreSQL"
    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    def __init__(
        self,
        port: int | None = None,
        *,
        primary: PostgresServer | None = None,
        settings: Mapping[str, str] | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.bindir = postgres_bindir()
        self._as_user = as_server_user()
        prefix = "baton-pgstandby-" if primary is not None else "baton-postgresql-"
        super().__init__(port, dir_prefix=prefix)
        give_to_server_user(self.dir)
        self.primary = primary
        self.settings = dict(settings or {})
        self.superuser = SUPERUSER
        self.superuser_password = SUPERUSER_PASSWORD
        self.user = APP_USER
        self.password = APP_PASSWORD
        self.database = APP_DATABASE
        self._provisioned = primary is not None  # a standby has its primary's roles
        self.tls = tls

    # -- paths and addresses -------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "postgresql.log"

    @property
    def socket_dir(self) -> Path:
        """Where the server's Unix socket is (``psql -h socket_dir -p port -U postgres``)."""
        return self.dir

    def url(
        self,
        user: str | None = None,
        password: str | None = None,
        db: str | None = None,
        host: str = HOST,
        **params: str | int,
    ) -> str:
        """``postgresql://user:password@127.0.0.1:port/db[?params]``; the app role by default.

        Args:
            user, password, db: default to ``baton`` / ``secret`` / ``baton``.
            host: the host name to connect to (``localhost`` for a TLS name check).
            params: query parameters, e.g. ``application_name="replica-1"``.
        """
        user = user or self.user
        password = self.password if password is None else password
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        query = f"?{urlencode(params)}" if params else ""
        return f"postgresql://{auth}@{host}:{self.port}/{quote(db or self.database)}{query}"

    @property
    def dsn(self) -> str:
        """A libpq key/value string for the superuser on the application database."""
        return psycopg.conninfo.make_conninfo(**self._conninfo(None, None, None))

    def _passwords(self) -> dict[str | None, str]:
        return {
            None: self.superuser_password,
            self.superuser: self.superuser_password,
            self.user: self.password,
        }

    def _conninfo(self, user: str | None, password: str | None, db: str | None) -> dict[str, Any]:
        return {
            "host": HOST,
            "port": self.port,
            "user": user or self.superuser,
            # A known role's password by default, so connect(user="baton") just works.
            "password": password if password is not None else self._passwords().get(user),
            "dbname": db or self.database,
            "connect_timeout": CONNECT_TIMEOUT,
        }

    # -- connections and SQL as the superuser ----------------------------------------------

    def connect(
        self,
        user: str | None = None,
        password: str | None = None,
        db: str | None = None,
        **kwargs: Any,
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit psycopg connection; the superuser on the app database by default.

        The caller closes it (``with server.connect() as conn: ...``).
        """
        options = self._conninfo(user, password, db)
        options.update(kwargs)
        return psycopg.connect(autocommit=True, **options)

    def execute(
        self, statement: str | sql.Composable, params: Any = None, *, db: str | None = None
    ) -> None:
        """Run one statement as the superuser (on the app database unless ``db`` says)."""
        with self.connect(db=db) as conn:
            conn.execute(statement, params)  # type: ignore[arg-type]

    def query(
        self, statement: str | sql.Composable, params: Any = None, *, db: str | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one query as the superuser and return all its rows."""
        with self.connect(db=db) as conn:
            return conn.execute(statement, params).fetchall()  # type: ignore[arg-type]

    def create_role(self, name: str, password: str, grants: Iterable[str] = ()) -> str:
        """Create a login role with only ``grants`` (run on the app database); return its URL.

        Args:
            grants: whole statements, e.g. ``"GRANT USAGE ON SCHEMA public TO limited"``.
        """
        self.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        for grant in grants:
            self.execute(grant)
        return self.url(user=name, password=password)

    def terminate(self, target: int | str, timeout: float = 5.0) -> int:
        """``pg_terminate_backend`` a backend by pid, or all with an ``application_name``.

        Waits up to ``timeout`` seconds for each to exit; returns how many were terminated.
        """
        column = "pid" if isinstance(target, int) else "application_name"
        rows = self.query(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, %s)) "
                "FROM pg_stat_activity WHERE {} = %s AND pid <> pg_backend_pid()"
            ).format(sql.Identifier(column)),
            (round(timeout * 1000), target),
            db=MAINTENANCE_DATABASE,
        )
        return int(rows[0][0])

    # -- replication -------------------------------------------------------------------------

    @property
    def timeline_id(self) -> int:
        """The timeline of the last checkpoint (``pg_control_checkpoint()``)."""
        return int(self.query(
            "SELECT timeline_id FROM pg_control_checkpoint()", db=MAINTENANCE_DATABASE
        )[0][0])  # fmt: skip

    @property
    def system_identifier(self) -> int:
        """The cluster's identifier from initdb (``pg_control_system()``); a standby shares it."""
        return int(self.query(
            "SELECT system_identifier FROM pg_control_system()", db=MAINTENANCE_DATABASE
        )[0][0])  # fmt: skip

    @property
    def in_recovery(self) -> bool:
        """True on a standby (``pg_is_in_recovery()``)."""
        return bool(self.query("SELECT pg_is_in_recovery()", db=MAINTENANCE_DATABASE)[0][0])

    def make_standby(self, port: int | None = None) -> PostgresServer:
        """Clone an asynchronous streaming standby of this (running) server, and start it.

        The caller cleans it up. Reads on it work at once (``hot_standby``); writes fail
        until :meth:`promote`.
        """
        standby = PostgresServer(port, primary=self, settings=self.settings)
        try:
            return standby.start()
        except BaseException:
            standby.cleanup()
            raise

    def wait_caught_up(self, timeout: float = 10.0) -> None:
        """On a standby: wait until it has replayed everything its primary has written so far."""
        if self.primary is None:
            raise RuntimeError("wait_caught_up is for a standby (made by make_standby)")
        target = self.primary.query("SELECT pg_current_wal_lsn()", db=MAINTENANCE_DATABASE)[0][0]
        deadline = time.monotonic() + timeout
        while True:
            replayed = self.query(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,), db=MAINTENANCE_DATABASE
            )[0][0]
            if replayed:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"standby on port {self.port} did not replay up to {target} within "
                    f"{timeout} s: {self._log_tail()}"
                )
            time.sleep(0.01)

    def promote(self, timeout: float = START_TIMEOUT) -> None:
        """Promote this standby to a primary on a new timeline; return once it takes writes.

        Also runs a ``CHECKPOINT``, so :attr:`timeline_id` (read from the last checkpoint)
        shows the new timeline when this returns.
        """
        promoted = self.query(
            "SELECT pg_promote(true, %s)", (max(1, round(timeout)),), db=MAINTENANCE_DATABASE
        )[0][0]
        if not promoted:
            raise RuntimeError(
                f"standby on port {self.port} was not promoted within {timeout} s: "
                f"{self._log_tail()}"
            )
        # A write needs a transaction id, which a server in recovery refuses to assign.
        self.query("SELECT pg_current_xact_id()")
        self.execute("CHECKPOINT", db=MAINTENANCE_DATABASE)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> Self:
        """Start (after initdb or a base backup the first time) and wait for connections."""
        super().start()
        if not self._provisioned:
            self.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(self.user), sql.Literal(self.password)
                ),
                db=MAINTENANCE_DATABASE,
            )
            self.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(self.database), sql.Identifier(self.user)
                ),
                db=MAINTENANCE_DATABASE,
            )
            self._provisioned = True
        return self

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back, disconnect, checkpoint); SIGKILL after a timeout."""
        self._signal(signal.SIGINT)
        if not self._wait_exit(self.stop_timeout):
            self.kill()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend it forked: a crash, no shutdown checkpoint.

        The server runs in its own process group (its id is the postmaster's pid), and all
        of it dies, like a host losing power; :meth:`restart` then runs crash recovery.
        """
        if self._process is None:
            return
        pgid = self._process.pid
        with contextlib.suppress(ProcessLookupError):  # all of it exited already
            os.killpg(pgid, signal.SIGKILL)
        self._wait_exit(self.stop_timeout)
        # Orphaned backends attached to the old shared memory would make a restart refuse
        # to start ("pre-existing shared memory block is still in use"): wait them out.
        deadline = time.monotonic() + self.stop_timeout
        while _process_group_alive(pgid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} processes of group {pgid} survived SIGKILL")
            time.sleep(0.01)
        # Every process of the old server is gone, so its lock file is stale: remove it
        # rather than let a reused pid make the restart think the old postmaster still runs.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        self._process = None

    def processes(self) -> list[int]:
        """The postmaster and every process it forked (each backend is a session leader of
        its own, so the postmaster's process group does not reach them)."""
        postmaster = self.pid
        found = [postmaster]
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                status = (entry / "status").read_text()
                parent = re.search(r"^PPid:\s+(\d+)", status, re.MULTILINE)
                if parent and int(parent.group(1)) == postmaster:
                    found.append(int(entry.name))
        return found

    def pause(self) -> None:
        """SIGSTOP the whole server: it accepts nothing and answers nothing, while the
        kernel still acknowledges its TCP traffic (a frozen VM, a stalled disk)."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT every process of the server."""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def cleanup(self) -> None:
        """Kill the server (no need to shut down cleanly) and remove its directory."""
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _launch(self) -> subprocess.Popen[bytes]:
        if not (self.data_dir / "PG_VERSION").exists():
            if self.primary is None:
                self._initdb()
            else:
                self._base_backup(self.primary)
        flags = {
            **self.settings,
            "port": str(self.port),
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.socket_dir),
        }
        args = [str(self.bindir / "postgres"), "-D", str(self.data_dir)]
        for key, value in flags.items():
            args += ["-c", f"{key}={value}"]
        # Appended to, so a restart's failure shows what the server did before it.
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so kill() reaches the backends too.
                start_new_session=True,
                **self._as_user,
            )

    def _run_as_server_user(
        self, args: list[str], what: str, env: dict[str, str] | None = None
    ) -> None:
        with self.log_path.open("ab") as log:
            result = subprocess.run(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                timeout=self.start_timeout,
                **self._as_user,
            )
        if result.returncode != 0:
            raise RuntimeError(f"{what} failed with status {result.returncode}: {self._log_tail()}")

    def _initdb(self) -> None:
        password_file = self.dir / "superuser-password"
        password_file.write_text(self.superuser_password + "\n")
        give_to_server_user(password_file)
        self._run_as_server_user(
            [
                str(self.bindir / "initdb"),
                "--pgdata", str(self.data_dir),
                "--username", self.superuser,
                "--pwfile", str(password_file),
                "--auth-local", "trust",
                "--auth-host", "scram-sha-256",
                "--encoding", "UTF8",
                "--locale", "C",
                "--no-sync",
            ],
            "initdb",
        )  # fmt: skip
        password_file.unlink()
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# tests/harness/postgresql_server.py\n")
            conf.writelines(f"{key} = {value}\n" for key, value in SERVER_SETTINGS.items())
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)
        if self.tls is not None:
            # The server refuses a key file others can read, or that it does not own.
            for source, name in ((self.tls.cert, "server.crt"), (self.tls.key, "server.key")):
                copy = self.data_dir / name
                shutil.copyfile(source, copy)
                copy.chmod(0o600)
                give_to_server_user(copy)

    def _base_backup(self, primary: PostgresServer) -> None:
        # -R writes standby.signal and primary_conninfo (with the password from PGPASSWORD);
        # --checkpoint=fast, or the backup waits for the next spread checkpoint.
        self._run_as_server_user(
            [
                str(self.bindir / "pg_basebackup"),
                "--pgdata", str(self.data_dir),
                "--host", HOST,
                "--port", str(primary.port),
                "--username", primary.superuser,
                "--no-password",
                "--wal-method", "stream",
                "--write-recovery-conf",
                "--checkpoint", "fast",
                "--no-sync",
            ],
            f"pg_basebackup from port {primary.port}",
            env={"PGPASSWORD": primary.superuser_password, "PGCONNECT_TIMEOUT": "5"},
        )  # fmt: skip

    def _wait_until_ready(self) -> None:
        def accepts() -> bool:
            with self.connect(db=MAINTENANCE_DATABASE) as conn:
                conn.execute("SELECT 1")
            return True

        # OperationalError covers "starting up", "in recovery mode" and connection refused.
        self._wait_until(accepts, "accept connections", (psycopg.OperationalError,))
