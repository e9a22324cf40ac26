"""A real ``redis-server`` process on a loopback port, for contract and fault tests.

No persistence (``--save ''``, ``--appendonly no``): :meth:`RedisServer.kill` followed by
:meth:`RedisServer.restart` is a Redis that lost all its data, the fault the fencing-token
scheme must survive.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

# Re-exported: the tests import both from here, where they lived before ProcessServer.
from tests.harness.process_server import HOST as HOST
from tests.harness.process_server import ProcessServer
from tests.harness.process_server import free_port as free_port

REDIS_SERVER = "redis-server"

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
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed; the TLS tests need it to make certificates")
    d = directory
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        [openssl, "req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt",
         "-days", "2", "-subj", "/CN=baton-test-ca",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", *ec, "-keyout", d / "server.key", "-out", d / "server.csr",
         "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.crt",
         "-CAkey", d / "ca.key", "-CAcreateserial", "-out", d / "server.crt", "-days", "2",
         "-extfile", d / "server.ext"],
    ]  # fmt: skip
    (d / "server.ext").write_text(
        "subjectAltName=DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    for command in commands:
        subprocess.run([str(arg) for arg in command], check=True, capture_output=True)
    return TlsFiles(ca_cert=d / "ca.crt", cert=d / "server.crt", key=d / "server.key")


class RedisServer(ProcessServer):
    """One ``redis-server`` child process bound to ``127.0.0.1`` in its own temp dir.

    Without persistence, :meth:`kill` loses all data and :meth:`restart` comes back empty.

    Args:
        password: if given, the server runs with ``requirepass``.
        port: the port to bind; a free one when ``None``.
        tls: if given, the port speaks TLS only (no plain-text port), with these files.
    """

    name = "redis-server"
    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    def __init__(
        self, password: str | None = None, port: int | None = None, tls: TlsFiles | None = None
    ) -> None:
        self._binary = redis_server_binary()
        super().__init__(port, dir_prefix="baton-redis-")
        self.password = password
        self.tls = tls

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

    def _launch(self) -> subprocess.Popen[bytes]:
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
