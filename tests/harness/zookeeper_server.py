"""A real standalone ZooKeeper server process on a loopback port, for contract and fault tests.

The server runs in the foreground as a child JVM (``ZooKeeperServerMain`` with its own
``zoo.cfg`` and data directory), from the jars of the Debian ``zookeeper`` package. Unlike the
Redis harness, data survives :meth:`ZooKeeperServer.kill`: ZooKeeper writes every transaction
to its log before answering, so a restart on the same data directory brings back the latch,
the history and the sessions (which then expire unless their clients reconnect in time).

``tickTime`` is 100 ms, so sessions may be as short as 200 ms (``minSessionTimeout`` is two
ticks) and the server notices an expired session within a tick.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from pathlib import Path

from kazoo.client import KazooClient

from tests.harness.process_server import HOST, ProcessServer, free_port
from tests.harness.redis_server import TlsFiles

JAVA = "java"
MAIN_CLASS = "org.apache.zookeeper.server.ZooKeeperServerMain"
#: Where the Debian packages put the server's jars (libzookeeper-java and its dependencies).
JAR_DIRS = ("/usr/share/java", "/usr/share/zookeeper/lib", "/usr/share/zookeeper")
#: The jars a standalone server needs, by file-name prefix: server, wire format, logging.
JARS = ("zookeeper", "zookeeper-jute", "slf4j-api", "slf4j-simple")
#: And for TLS, which only ZooKeeper's Netty connection factory speaks.
TLS_JARS = (
    "netty-buffer",
    "netty-codec",
    "netty-common",
    "netty-handler",
    "netty-resolver",
    "netty-transport",
    "netty-transport-native-epoll",
    "netty-transport-native-unix-common",
)

#: Seconds a server may take to serve requests after starting, and to exit after a signal.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
TICK_MS = 100

# ZooKeeper generates a session's password from its id with java.util.Random seeded by
# ``id ^ superSecret`` (ZooKeeperServer.generatePasswd); with it a test can take over any
# session by id, the way a network partition followed by a reconnect would.
_SUPER_SECRET = 0xB3415C00
_JAVA_MULTIPLIER = 0x5DEECE66D
_JAVA_MASK = (1 << 48) - 1


def session_password(session_id: int) -> bytes:
    """The 16-byte password ZooKeeper issued for ``session_id`` (see ``_SUPER_SECRET``)."""
    seed = ((session_id ^ _SUPER_SECRET) ^ _JAVA_MULTIPLIER) & _JAVA_MASK
    out = bytearray()
    while len(out) < 16:
        # java.util.Random.nextInt(), then nextBytes() takes its bytes low first.
        seed = (seed * _JAVA_MULTIPLIER + 0xB) & _JAVA_MASK
        value = seed >> 16
        for _ in range(min(4, 16 - len(out))):
            out.append(value & 0xFF)
            value >>= 8
    return bytes(out)


def classpath(tls: bool = False) -> str:
    """The server's class path; fails loudly when the package is missing (never a skip)."""
    if shutil.which(JAVA) is None:
        raise RuntimeError("java is not installed; the ZooKeeper tests start a real server")
    found = []
    for prefix in JARS + (TLS_JARS if tls else ()):
        candidates = [
            path
            for directory in JAR_DIRS
            for path in [
                f"{directory}/{prefix}.jar",
                *sorted(glob.glob(f"{directory}/{prefix}-[0-9]*.jar")),
            ]
            if os.path.isfile(path)
        ]
        if not candidates:
            raise RuntimeError(
                f"{prefix}.jar not found in {', '.join(JAR_DIRS)}: the ZooKeeper contract and "
                "fault tests need a real server (apt-get install zookeeper, or "
                "scripts/ensure-servers.sh)"
            )
        found.append(candidates[0])
    return ":".join(found)


class ZooKeeperServer(ProcessServer):
    """One standalone ZooKeeper child process bound to ``127.0.0.1`` in its own temp dir.

    Its transaction log is on disk before it answers, so :meth:`kill` loses no answered
    write and :meth:`restart` on the same data directory brings it all back.

    Args:
        port: the client port; a free one when ``None``.
        max_session_timeout: seconds; the longest session the server grants (clients asking
            for more are clamped to it).
        force_sync: fsync the transaction log before answering (ZooKeeper's default). The
            harness keeps it on so latencies measured against it are realistic.
        tls: if given, ``port`` speaks TLS only, with this certificate (for ``localhost``);
            a second, plain port (``admin_port``) serves the probes and admin clients.
    """

    name = "ZooKeeper"
    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    def __init__(
        self,
        port: int | None = None,
        *,
        max_session_timeout: float = 60.0,
        force_sync: bool = True,
        tls: TlsFiles | None = None,
    ) -> None:
        self._classpath = classpath(tls=tls is not None)
        super().__init__(port, dir_prefix="baton-zookeeper-")
        self.admin_port = free_port() if tls is not None else self.port
        self.max_session_timeout = max_session_timeout
        self.force_sync = force_sync
        self.tls = tls

    @property
    def hosts(self) -> str:
        """``127.0.0.1:port``, for kazoo; ``localhost:port`` (the certificate's name) for TLS."""
        return f"{'localhost' if self.tls else HOST}:{self.port}"

    def url(
        self, chroot: str = "/baton", user: str | None = None, password: str | None = None
    ) -> str:
        """``zookeeper://[user:password@]127.0.0.1:port/chroot``."""
        auth = f"{user}:{password}@" if user is not None else ""
        return f"zookeeper://{auth}{self.hosts}{chroot}"

    @property
    def log_path(self) -> Path:
        return self.dir / "zookeeper.log"

    def _launch(self) -> subprocess.Popen[bytes]:
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        config = self.dir / "zoo.cfg"
        text = (
            f"tickTime={TICK_MS}\n"
            f"dataDir={data}\n"
            f"clientPort={self.admin_port}\n"
            f"clientPortAddress={HOST}\n"
            "maxClientCnxns=0\n"
            f"minSessionTimeout={2 * TICK_MS}\n"
            f"maxSessionTimeout={round(self.max_session_timeout * 1000)}\n"
            f"forceSync={'yes' if self.force_sync else 'no'}\n"
            "admin.enableServer=false\n"
            # srvr is the readiness probe; wchp shows who watches which node.
            "4lw.commands.whitelist=srvr,ruok,wchp,wchc,cons,stat,mntr\n"
        )
        if self.tls is not None:
            # ZooKeeper reads a PEM key store as one file: certificate chain and key.
            keystore = self.dir / "server.pem"
            keystore.write_text(self.tls.cert.read_text() + self.tls.key.read_text())
            text += (
                "serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n"
                f"secureClientPort={self.port}\n"
                f"secureClientPortAddress={HOST}\n"
                f"ssl.keyStore.location={keystore}\n"
                "ssl.keyStore.type=PEM\n"
                f"ssl.trustStore.location={self.tls.ca_cert}\n"
                "ssl.trustStore.type=PEM\n"
                "ssl.clientAuth=none\n"
            )
        config.write_text(text)
        args = [
            JAVA,
            # A small heap and the client compiler start the JVM in a fraction of a second.
            "-Xmx256m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.net.preferIPv4Stack=true",
            "-Dzookeeper.jmx.log4j.disable=true",
            "-Dorg.slf4j.simpleLogger.showDateTime=true",
            "-cp",
            self._classpath,
            MAIN_CLASS,
            str(config),
        ]
        # Appended to, so a restart's failure shows what the server did before it.
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    def four_letter(self, command: str, timeout: float = 2.0) -> str:
        """Send a four-letter admin command (``srvr``, ``wchp``, ...) and return the answer."""
        with socket.create_connection((HOST, self.admin_port), timeout=timeout) as sock:
            sock.sendall(command.encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def watches_by_path(self) -> dict[str, set[int]]:
        """Server-side data watches: node path -> session ids watching it (``wchp``)."""
        out: dict[str, set[int]] = {}
        path = None
        for line in self.four_letter("wchp").splitlines():
            if line.startswith("/"):
                path = line.strip()
                out[path] = set()
            elif line.strip().startswith("0x") and path is not None:
                out[path].add(int(line.strip(), 16))
        return out

    def client(self, auth: tuple[str, str] | None = None, timeout: float = 5.0) -> KazooClient:
        """A started kazoo client for fault injection; the caller stops it."""
        client = KazooClient(
            hosts=f"{HOST}:{self.admin_port}",
            timeout=timeout,
            auth_data=[("digest", f"{auth[0]}:{auth[1]}")] if auth else None,
        )
        client.start(timeout=timeout)
        return client

    def expire_session(self, session_id: int, timeout: float = 5.0) -> None:
        """Make the server end session ``session_id`` as if it had expired.

        A second client attaches to the session (the server drops the owner's connection),
        then closes it: its ephemeral nodes are deleted and its owner learns on reconnecting
        that the session has expired.
        """
        intruder = KazooClient(
            hosts=f"{HOST}:{self.admin_port}",
            client_id=(session_id, session_password(session_id)),
            timeout=timeout,
        )
        intruder.start(timeout=timeout)
        try:
            if intruder.client_id is None or intruder.client_id[0] != session_id:
                raise RuntimeError(f"could not attach to session {session_id:#x}")
        finally:
            intruder.stop()
            intruder.close()

    def _wait_until_ready(self) -> None:
        # "ruok" answers before the server loads its data; srvr says when it serves.
        self._wait_until(
            lambda: self.four_letter("srvr", timeout=0.5).startswith("Zookeeper version"),
            "serve",
            (OSError,),
        )
