"""A real PgBouncer process on a loopback port in front of a :class:`PostgresServer`.

Transaction pooling by default, the mode that breaks session state (advisory locks,
``LISTEN``, ``SET``, server-side prepared statements: PgBouncer 1.18 from Debian bookworm has
no ``max_prepared_statements``), which is what a backend must survive behind it. Clients
authenticate with SCRAM against a userlist file holding plain passwords, which PgBouncer
also uses to log in to the server (SCRAM there too).

PgBouncer refuses to run as root; when the tests run as root it runs as the ``postgres`` OS
user, like the server.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg

from tests.harness.postgresql_server import (
    CONNECT_TIMEOUT,
    PostgresServer,
    as_server_user,
    give_to_server_user,
)
from tests.harness.process_server import HOST, ProcessServer

PGBOUNCER = "pgbouncer"
#: The pseudo-database of PgBouncer's admin console (``SHOW POOLS``, ``RELOAD``, ...).
ADMIN_DATABASE = "pgbouncer"

#: Seconds PgBouncer may take to serve its admin console after starting, and to exit.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def pgbouncer_binary() -> str:
    """The path of ``pgbouncer`` (Debian puts it in /usr/sbin); fails loudly when missing."""
    path = shutil.which(PGBOUNCER) or shutil.which(PGBOUNCER, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise RuntimeError(
            "pgbouncer is not installed; the PostgreSQL-through-PgBouncer tests need a real "
            "one (apt-get install pgbouncer, or bash scripts/ensure-servers.sh)"
        )
    return path


def _quoted(value: str) -> str:
    # The userlist format: "name" "password", a double quote inside doubled.
    return '"' + value.replace('"', '""') + '"'


class PgBouncer(ProcessServer):
    """One ``pgbouncer`` child process on ``127.0.0.1:port``, pooling for ``server``.

    Every database name is routed to ``server`` (``* = host=... port=...``), so it follows
    the server across a :meth:`PostgresServer.restart` on the same port.

    Args:
        server: the PostgreSQL server to pool connections to (it need not be running yet).
        port: the port to listen on; a free one when ``None``.
        pool_mode: ``transaction`` (the default here), ``session`` or ``statement``.
        default_pool_size: server connections per user and database; 1 makes two clients
            share one server backend, which only transaction pooling allows.
        users: login name -> password for the userlist; the server's app role and superuser
            by default (the superuser is also PgBouncer's admin).
        ignore_startup_parameters: startup parameters PgBouncer accepts and drops instead of
            refusing the connection (``options`` is refused unless listed here).
    """

    name = "PgBouncer"
    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    def __init__(
        self,
        server: PostgresServer,
        port: int | None = None,
        *,
        pool_mode: str = "transaction",
        default_pool_size: int = 20,
        users: Mapping[str, str] | None = None,
        ignore_startup_parameters: Sequence[str] = ("extra_float_digits",),
    ) -> None:
        self._binary = pgbouncer_binary()
        self._as_user = as_server_user()
        super().__init__(port, dir_prefix="baton-pgbouncer-")
        give_to_server_user(self.dir)
        self.server = server
        self.pool_mode = pool_mode
        self.default_pool_size = default_pool_size
        self.ignore_startup_parameters = tuple(ignore_startup_parameters)
        self.users = dict(
            users or {server.user: server.password, server.superuser: server.superuser_password}
        )

    @property
    def log_path(self) -> Path:
        return self.dir / "pgbouncer.log"

    @property
    def config_path(self) -> Path:
        return self.dir / "pgbouncer.ini"

    @property
    def userlist_path(self) -> Path:
        return self.dir / "userlist.txt"

    def url(
        self,
        user: str | None = None,
        password: str | None = None,
        db: str | None = None,
        **params: str | int,
    ) -> str:
        """``postgresql://user:password@127.0.0.1:port/db[?params]`` through PgBouncer.

        Defaults are the server's app role and database (``baton:secret@.../baton``).
        """
        user = user or self.server.user
        password = self.users.get(user, "") if password is None else password
        auth = quote(user, safe="") + (f":{quote(password, safe='')}" if password else "")
        query = f"?{urlencode(params)}" if params else ""
        db = quote(db or self.server.database)
        return f"postgresql://{auth}@{HOST}:{self.port}/{db}{query}"

    def connect(
        self,
        user: str | None = None,
        password: str | None = None,
        db: str | None = None,
        **kwargs: Any,
    ) -> psycopg.Connection[tuple[Any, ...]]:
        """An autocommit psycopg connection through PgBouncer (the app role by default)."""
        user = user or self.server.user
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user=user,
            password=self.users.get(user, "") if password is None else password,
            dbname=db or self.server.database,
            connect_timeout=CONNECT_TIMEOUT,
            autocommit=True,
            **kwargs,
        )

    def admin(self, command: str) -> list[tuple[Any, ...]]:
        """Run an admin console command (``SHOW POOLS``, ``RELOAD``, ``PAUSE``...) as admin.

        The console speaks only the simple query protocol, hence a ``ClientCursor``.
        """
        with self.connect(
            user=self.server.superuser, db=ADMIN_DATABASE, cursor_factory=psycopg.ClientCursor
        ) as conn:
            cursor = conn.execute(command)
            return cursor.fetchall() if cursor.description is not None else []

    def show_config(self) -> dict[str, str]:
        """``SHOW CONFIG`` as setting -> value (e.g. ``{"pool_mode": "transaction", ...}``)."""
        return {str(row[0]): str(row[1]) for row in self.admin("SHOW CONFIG")}

    def add_user(self, name: str, password: str) -> None:
        """Add a login to the userlist (e.g. a role from :meth:`PostgresServer.create_role`).

        A running PgBouncer rereads the file at once (``RELOAD``).
        """
        self.users[name] = password
        self._write_userlist()
        if self.running:
            self.admin("RELOAD")

    def _write_userlist(self) -> None:
        self.userlist_path.write_text(
            "".join(f"{_quoted(user)} {_quoted(pw)}\n" for user, pw in self.users.items())
        )
        self.userlist_path.chmod(0o600)
        give_to_server_user(self.userlist_path)

    def _launch(self) -> subprocess.Popen[bytes]:
        self._write_userlist()
        self.config_path.write_text(
            "[databases]\n"
            f"* = host={HOST} port={self.server.port}\n"
            "\n[pgbouncer]\n"
            f"listen_addr = {HOST}\n"
            f"listen_port = {self.port}\n"
            # No Unix socket (it would default to /tmp, shared by every test instance).
            "unix_socket_dir =\n"
            "auth_type = scram-sha-256\n"
            f"auth_file = {self.userlist_path}\n"
            f"admin_users = {self.server.superuser}\n"
            f"stats_users = {self.server.superuser}\n"
            f"pool_mode = {self.pool_mode}\n"
            f"default_pool_size = {self.default_pool_size}\n"
            "max_client_conn = 1000\n"
            f"ignore_startup_parameters = {','.join(self.ignore_startup_parameters)}\n"
            # After the server restarts, log in again within a second, not the default 15 s.
            "server_login_retry = 1\n"
            "server_connect_timeout = 5\n"
            # Logs go to stderr, which is the log file; no pid file, no daemon.
            "syslog = 0\n"
        )
        give_to_server_user(self.config_path)
        # Appended to, so a restart's failure shows what PgBouncer did before it.
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                [self._binary, str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                **self._as_user,
            )

    def _wait_until_ready(self) -> None:
        # The admin console answers without a server connection, so this does not depend on
        # the PostgreSQL server being up.
        self._wait_until(
            lambda: self.admin("SHOW VERSION"), "serve its admin console", (psycopg.Error,)
        )
