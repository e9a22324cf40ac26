"""A real ``redis-server`` process on a loopback port, for contract and fault tests.

No persistence (``--save ''``, ``--appendonly no``): :meth:`RedisServer.kill` followed by
:meth:`RedisServer.restart` is a Redis that lost all its data, the fault the fencing-token
scheme must survive.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REDIS_SERVER = "redis-server"
HOST = "127.0.0.1"

#: Seconds a server may take to answer PING after starting, and to exit after a signal.
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


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


class RedisServer:
    """One ``redis-server`` child process bound to ``127.0.0.1`` in its own temp dir.

    Args:
        password: if given, the server runs with ``requirepass``.
        port: the port to bind; a free one when ``None``.
        tls: if given, the port speaks TLS only (no plain-text port), with these files.
    """

    def __init__(
        self, password: str | None = None, port: int | None = None, tls: TlsFiles | None = None
    ) -> None:
        self.password = password
        self.tls = tls
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="baton-redis-"))
        self._binary = redis_server_binary()
        self._process: subprocess.Popen[bytes] | None = None

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
    def pid(self) -> int:
        """The server's process id (it must be running)."""
        if self._process is None:
            raise RuntimeError("redis-server is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING."""
        if self.running:
            raise RuntimeError(f"redis-server already running on port {self.port}")
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
            str(self.dir / "redis.log"),
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
        self._process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._wait_until_up()
        return self

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

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``STOP_TIMEOUT``."""
        self._signal(signal.SIGTERM)
        if not self._wait_exit(STOP_TIMEOUT):
            self._signal(signal.SIGKILL)
            self._wait_exit(STOP_TIMEOUT)
        self._process = None

    def kill(self) -> None:
        """SIGKILL: the server dies at once and, without persistence, loses all data."""
        self._signal(signal.SIGKILL)
        self._wait_exit(STOP_TIMEOUT)
        self._process = None

    def restart(self) -> None:
        """Start again on the same port (after :meth:`stop` or :meth:`kill`)."""
        if self.running:
            self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server if running and remove its directory."""
        if self.running:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _signal(self, sig: signal.Signals) -> None:
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, sig)

    def _wait_exit(self, timeout: float) -> bool:
        if self._process is None:
            return True
        try:
            self._process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        if self._process.stderr is not None:
            self._process.stderr.close()
        return True

    def _wait_until_up(self) -> None:
        assert self._process is not None
        probe = self.client(timeout=0.5, retry=Retry(NoBackoff(), 0))
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                if self._process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with status {self._process.returncode} while "
                        f"starting on port {self.port}: {self._log_tail()}"
                    )
                try:
                    if probe.ping():
                        return
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise RuntimeError(
                        f"redis-server did not answer PING on port {self.port} within "
                        f"{START_TIMEOUT} s: {self._log_tail()}"
                    )
                time.sleep(0.01)
        finally:
            probe.close()

    def _log_tail(self) -> str:
        log = self.dir / "redis.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        if self._process is not None and self._process.stderr is not None:
            try:
                if self._process.poll() is not None:
                    text += self._process.stderr.read().decode(errors="replace")
            except OSError:
                pass
        return text[-2000:] or "(no log output)"
