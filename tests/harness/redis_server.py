"""A real ``redis-server`` process on a loopback port, for contract and fault tests.

No persistence (``--save ''``, ``--appendonly no``): :meth:`RedisServer.kill` followed by
:meth:`RedisServer.restart` is a Redis that lost all its data, the fault the fencing-token
scheme must survive. :class:`AofServer` is the persistent variant: AOF on, and a way to
restart it with an older persisted state (the writes of the last second lost by a crash).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# Re-exported: the tests import both from here, where they lived before ProcessServer.
from tests.harness.process_server import HOST as HOST
from tests.harness.process_server import ProcessServer
from tests.harness.process_server import free_port as free_port
from tests.harness.tls import openssl_certificates

REDIS_SERVER = "redis-server"

#: How ``redis.conf`` spells an empty value (``save ""``).
EMPTY = '""'

#: Seconds a server may take to answer PING after starting, and to exit after a signal.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def redis_server_binary() -> str:
    """The path of ``redis-server``; fails loudly when it is missing (never a skip)."""
    path = shutil.which(REDIS_SERVER)
    if path is None:
        raise RuntimeError(
            "redis-server is not installed or not on PATH; the Redis contract and fault "
            "tests need a real server (apt-get install redis-server)"
        )
    return path


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA and a server certificate it signed, valid for ``DNS:localhost`` only."""

    ca_cert: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a test CA and a ``localhost`` server certificate with ``openssl``."""
    openssl_certificates(directory, san="DNS:localhost", usage="serverAuth", client=False)
    d = directory
    return TlsFiles(ca_cert=d / "ca.crt", cert=d / "server.crt", key=d / "server.key")


class RedisServer(ProcessServer):
    """One ``redis-server`` child process bound to ``127.0.0.1`` in its own temp dir.

    Without persistence, :meth:`kill` loses all data and :meth:`restart` comes back empty.

    Args:
        password: if given, the server runs with ``requirepass``.
        port: the port to bind; a free one when ``None``.
        tls: if given, the port speaks TLS only (no plain-text port), with these files.
        config: extra ``redis.conf`` directives (``{"appendonly": "yes"}``, ``{"replicaof":
            "127.0.0.1 6379"}``; ``""`` is written as ``""``). When given, the server runs
            from a config file in its directory, written once and kept across restarts, so
            a ``CONFIG REWRITE`` (Sentinel does one on every reconfiguration) survives a
            restart as it does in production; ``save ""`` and ``appendonly no`` stay the
            defaults. ``None`` (the default) starts it from the command line only.
    """

    name = "redis-server"
    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    def __init__(
        self,
        password: str | None = None,
        port: int | None = None,
        tls: TlsFiles | None = None,
        config: Mapping[str, str] | None = None,
    ) -> None:
        self._binary = redis_server_binary()
        super().__init__(port, dir_prefix="baton-redis-")
        self.password = password
        self.tls = tls
        self.config = dict(config) if config is not None else None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0``, or for TLS
        ``rediss://[:password@]localhost:port/0?ssl_ca_certs=...`` (the name the
        certificate is for, and the test CA)."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}localhost:{self.port}/0?ssl_ca_certs={self.tls.ca_cert}"
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    @property
    def config_path(self) -> Path:
        """The ``redis.conf`` the server runs from (only when ``config`` was given)."""
        return self.dir / "redis.conf"

    def _launch(self) -> subprocess.Popen[bytes]:
        if self.config is not None:
            return self._launch_from_file(self.config)
        args = [
            self._binary,
            "--bind",
            HOST,
            "--port",
            "0" if self.tls else str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
        ]
        return self._popen(args)

    def _launch_from_file(self, config: Mapping[str, str]) -> subprocess.Popen[bytes]:
        if not self.config_path.exists():
            directives = {"save": "", "appendonly": "no", **config}
            self.config_path.write_text(
                "".join(f"{key} {value or EMPTY}\n" for key, value in directives.items())
            )
        args = [
            self._binary,
            str(self.config_path),
            "--bind",
            HOST,
            "--port",
            "0" if self.tls else str(self.port),
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
        ]
        return self._popen(args)

    def _popen(self, args: list[str]) -> subprocess.Popen[bytes]:
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls is not None:
            args += [
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls.cert),
                "--tls-key-file",
                str(self.tls.key),
                "--tls-ca-cert-file",
                str(self.tls.ca_cert),
                "--tls-auth-clients",
                "no",
            ]
        return subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def client(self, timeout: float = 2.0, **options: object) -> redis.Redis:
        """A plain client for fault injection (reading or changing keys behind a backend)."""
        if self.tls is not None:
            options.update(ssl=True, ssl_ca_certs=str(self.tls.ca_cert))
        return redis.Redis(
            host="localhost" if self.tls else HOST,
            port=self.port,
            password=self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
            **options,  # type: ignore[arg-type]
        )

    def _wait_until_ready(self) -> None:
        probe = self.client(timeout=0.5, retry=Retry(NoBackoff(), 0))
        try:
            self._wait_until(probe.ping, "answer PING", (redis.ConnectionError, redis.TimeoutError))
        finally:
            probe.close()


@dataclass(frozen=True)
class AofSnapshot:
    """A copy of an :class:`AofServer`'s append-only files at one moment."""

    path: Path


class AofServer(RedisServer):
    """A ``redis-server`` that persists with AOF only, and can be "crashed" to an older state.

    A kill -9 of the process loses nothing, whatever ``appendfsync`` says: every write the
    server answered is already in the OS page cache, which outlives the process. What
    ``appendfsync everysec`` (or ``no``) really risks is a crash of the machine, which loses
    the writes not yet fsynced, up to about a second of them. :meth:`snapshot` and
    :meth:`crash_to` make that loss exact instead of racing the fsync thread: the state a
    machine crash would leave is the AOF as it was at some earlier moment, so take a copy
    then, write more, and restart from the copy. The server comes back with everything up to
    the snapshot (a counter incremented before it, say) and nothing after it.

    Args:
        appendfsync: ``always``, ``everysec`` (Redis' default) or ``no``.
        password: as for :class:`RedisServer`.
        port: as for :class:`RedisServer`.
    """

    def __init__(
        self,
        appendfsync: Literal["always", "everysec", "no"] = "everysec",
        password: str | None = None,
        port: int | None = None,
    ) -> None:
        # No background rewrite: it would swap the files under a snapshot being taken.
        config = {
            "appendonly": "yes",
            "appendfsync": appendfsync,
            "appenddirname": "appendonlydir",
            "auto-aof-rewrite-percentage": "0",
        }
        super().__init__(password=password, port=port, config=config)
        self._snapshots = itertools.count(1)

    @property
    def aof_dir(self) -> Path:
        """The directory of the AOF manifest and its files (Redis 7 multi-part AOF)."""
        return self.dir / "appendonlydir"

    def snapshot(self) -> AofSnapshot:
        """Copy the AOF as it is now: what a machine crash right now would leave on disk.

        Every write the server has answered is in it (Redis writes the AOF before replying),
        a write in progress may be cut short (Redis truncates a partial last command when it
        loads, ``aof-load-truncated yes``).
        """
        target = self.dir / f"snapshot-{next(self._snapshots)}"
        shutil.copytree(self.aof_dir, target)
        return AofSnapshot(target)

    def restore(self, snapshot: AofSnapshot) -> None:
        """Replace the AOF by ``snapshot`` (the server must be stopped or killed)."""
        if self.running:
            raise RuntimeError(f"{self.name} on port {self.port} is running: kill it first")
        shutil.rmtree(self.aof_dir, ignore_errors=True)
        shutil.copytree(snapshot.path, self.aof_dir)

    def crash_to(self, snapshot: AofSnapshot) -> None:
        """kill -9, then restart with the persisted state of ``snapshot``: the writes made
        after it are lost, the ones before it are kept (a machine crash before an fsync)."""
        self.kill()
        self.restore(snapshot)
        self.start()

    def _wait_until_ready(self) -> None:
        # PING answers while the AOF is still loading; a loaded server answers commands.
        probe = self.client(timeout=0.5, retry=Retry(NoBackoff(), 0))
        try:
            self._wait_until(
                lambda: probe.dbsize() >= 0,
                "load its AOF and answer commands",
                (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError),
            )
        finally:
            probe.close()
