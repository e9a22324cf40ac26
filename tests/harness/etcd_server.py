"""Real etcd servers on loopback ports, for the contract, fault and chaos tests.

:class:`EtcdMember` is one ``/usr/bin/etcd`` child process (Debian's ``etcd-server``) with its
own data directory, client and peer ports; :class:`EtcdCluster` starts one (the contract
suite) or three (faults, chaos) as one etcd cluster. Data survives :meth:`EtcdMember.kill`:
etcd writes its WAL before answering, so a member restarted on its directory rejoins.

Raft runs fast here (heartbeat 50 ms, election timeout 500 ms): a killed leader member is
replaced within about a second, and etcd's minimum lease TTL is 1 s (``1.5 x`` the election
timeout, rounded up).

:func:`make_tls_files` makes a throw-away CA, a server certificate for ``localhost`` and
``127.0.0.1``, and a client certificate, with ``openssl``; :meth:`EtcdCluster.enable_auth`
creates the ``root`` user, a ``baton`` user whose role may only read and write the key
prefix ``/baton/`` (least privilege), and turns authentication on.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from scheduler.backends.etcd.gateway import b64
from tests.harness.process_server import HOST, ProcessServer, free_port
from tests.harness.tls import openssl_certificates

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
#: Seconds a member may take to serve requests after starting, and to exit after a signal.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
#: Raft timings in milliseconds (see the module docstring).
HEARTBEAT_MS = 50
ELECTION_MS = 500
#: The password of the ``root`` and ``baton`` users once :meth:`EtcdCluster.enable_auth` ran.
ROOT_PASSWORD = "root-s3cret"
BATON_PASSWORD = "b@ton:s3cret/pw"
#: The key prefix the ``baton`` user's role may read and write.
BATON_PREFIX = "/baton"


@dataclass(frozen=True)
class TlsFiles:
    """A throw-away CA, a server certificate it signed and a client certificate."""

    ca_cert: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def make_tls_files(directory: Path) -> TlsFiles:
    """Create a test CA, a ``localhost``/``127.0.0.1`` server certificate and a client
    certificate with ``openssl``."""
    openssl_certificates(
        directory, san="DNS:localhost,IP:127.0.0.1", usage="serverAuth,clientAuth", client=True
    )
    d = directory
    return TlsFiles(
        ca_cert=d / "ca.crt",
        cert=d / "server.crt",
        key=d / "server.key",
        client_cert=d / "client.crt",
        client_key=d / "client.key",
    )


class EtcdMember(ProcessServer):
    """One etcd member: client port :attr:`port`, peer port :attr:`peer_port`.

    Args:
        name: the member's name in the cluster.
        peer_port: its peer port (a free one when ``None``).
        tls: TLS files: the client port then speaks TLS only and wants a client certificate.
    """

    name = "etcd"
    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    def __init__(
        self,
        member: str,
        peer_port: int | None = None,
        tls: TlsFiles | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        super().__init__(None, "baton-etcd-")
        self.member = member
        self.extra = extra
        self.peer_port = peer_port or free_port()
        self.tls = tls
        self.initial_cluster = ""
        self.cluster_token = f"baton-{self.dir.name}"
        self.cluster_state = "new"
        self._log: IO[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.dir / "etcd.log"

    @property
    def client_url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{HOST}:{self.port}"

    @property
    def peer_url(self) -> str:
        return f"http://{HOST}:{self.peer_port}"

    def _launch(self) -> subprocess.Popen[bytes]:
        if not os.path.exists(ETCD):
            raise RuntimeError(
                f"{ETCD} is missing: install etcd-server (scripts/ensure-servers.sh)"
            )
        command = [
            ETCD,
            "--name", self.member,
            "--data-dir", str(self.dir / "data"),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster or f"{self.member}={self.peer_url}",
            "--initial-cluster-state", self.cluster_state,
            "--initial-cluster-token", self.cluster_token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap",
            "--log-level", "warn",
        ]  # fmt: skip
        if self.tls is not None:
            command += [
                "--cert-file",
                str(self.tls.cert),
                "--key-file",
                str(self.tls.key),
                "--trusted-ca-file",
                str(self.tls.ca_cert),
                "--client-cert-auth",
            ]
        command += list(self.extra)
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        return subprocess.Popen(
            command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def _wait_until_ready(self) -> None:
        # Ready = the member serves a linearizable read (it has a leader and caught up).
        self._wait_until(
            lambda: self.call("kv/range", {"key": b64("/ready")}, timeout=1.0) is not None,
            "serve a read",
            (httpx.HTTPError, OSError, RuntimeError, ValueError),
        )

    def _http(self) -> httpx.Client:
        verify: ssl.SSLContext | bool = False
        if self.tls is not None:
            context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
            context.load_cert_chain(str(self.tls.client_cert), str(self.tls.client_key))
            verify = context
        return httpx.Client(verify=verify, trust_env=False)

    def call(
        self, path: str, body: dict[str, Any], timeout: float = 5.0, token: str | None = None
    ) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on this member; the JSON answer.

        Raises:
            RuntimeError: an error answer.
        """
        headers = {"Authorization": token} if token else {}
        with self._http() as client:
            response = client.post(
                f"{self.client_url}/v3/{path}", json=body, timeout=timeout, headers=headers
            )
        data: dict[str, Any] = response.json()
        if response.status_code != 200 or "error" in data:
            raise RuntimeError(f"etcd {path}: {data}")
        return data

    def pause(self) -> None:
        """SIGSTOP: the member stops answering (peers and clients) without closing sockets."""
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        os.kill(self.pid, signal.SIGCONT)

    def cleanup(self) -> None:
        if self.running:
            self.resume()
        super().cleanup()
        if self._log is not None:
            self._log.close()
            self._log = None


class EtcdCluster:
    """``size`` etcd members forming one cluster on loopback ports.

    Args:
        size: 1 (contract suite) or 3 (faults, chaos).
        tls: whether the client ports speak TLS and want client certificates.
        extra: more ``etcd`` flags for every member (``--auth-token-ttl 1``).
    """

    def __init__(self, size: int = 1, tls: bool = False, extra: tuple[str, ...] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="baton-etcd-cluster-"))
        self.tls = make_tls_files(self.dir) if tls else None
        self.members = [EtcdMember(f"m{i}", tls=self.tls, extra=extra) for i in range(size)]
        initial = ",".join(f"{m.member}={m.peer_url}" for m in self.members)
        for member in self.members:
            member.initial_cluster = initial
            member.cluster_token = f"baton-{self.dir.name}"
        self.auth = False

    def start(self) -> EtcdCluster:
        """Start every member at once (they elect a leader together) and wait for each."""
        try:
            for member in self.members:
                member._process = member._launch()
            for member in self.members:
                member._wait_until_ready()
                member.cluster_state = "existing"
        except BaseException:
            self.cleanup()  # no member outlives a start that failed
            raise
        return self

    def cleanup(self) -> None:
        """Stop every member and remove every directory."""
        for member in self.members:
            member.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- URLs ---------------------------------------------------------------------------------

    def url(
        self,
        prefix: str = BATON_PREFIX,
        *,
        user: bool | None = None,
        members: list[EtcdMember] | None = None,
    ) -> str:
        """A Baton URL naming every member (or ``members``), as the ``baton`` user once
        auth is on (``user=False``: no credentials)."""
        chosen = members if members is not None else self.members
        hosts = ",".join(f"{HOST}:{m.port}" for m in chosen)
        with_user = self.auth if user is None else user
        credentials = f"baton:{BATON_PASSWORD}@" if with_user else ""
        if self.tls is None:
            return f"etcd://{credentials}{hosts}{prefix}"
        hosts = ",".join(f"localhost:{m.port}" for m in chosen)
        tls = self.tls
        return (
            f"etcds://{credentials}{hosts}{prefix}?cacert={tls.ca_cert}"
            f"&cert={tls.client_cert}&key={tls.client_key}"
        )

    # -- observation and faults ---------------------------------------------------------------

    def running(self) -> list[EtcdMember]:
        return [m for m in self.members if m.running]

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first running member that answers (as root once auth is on)."""
        last: Exception | None = None
        for member in self.running():
            try:
                token = self._root_token(member) if self.auth else None
                return member.call(path, body, token=token)
            except (httpx.HTTPError, RuntimeError) as exc:
                last = exc
        raise RuntimeError(f"no etcd member answered: {last}")

    def leader(self) -> EtcdMember:
        """The member Raft elected leader (waits up to 10 s for one)."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            for member in self.running():
                try:
                    status = member.call("maintenance/status", {}, timeout=1.0)
                except (httpx.HTTPError, RuntimeError):
                    continue
                if status.get("leader") == status["header"]["member_id"]:
                    return member
            time.sleep(0.05)
        raise RuntimeError("the etcd cluster has no leader")

    def lease_of(self, key: str) -> int:
        """The etcd lease id ``key`` is attached to (0 if none or missing)."""
        kvs = self.call("kv/range", {"key": b64(key)}).get("kvs", [])
        return int(kvs[0].get("lease", 0)) if kvs else 0

    def expire(self, key: str) -> None:
        """Revoke the lease ``key`` is attached to, as etcd does when its TTL runs out."""
        lease = self.lease_of(key)
        if lease:
            self.call("lease/revoke", {"ID": str(lease)})

    def delete(self, key: str) -> None:
        """Delete ``key`` (a foreign write)."""
        self.call("kv/deleterange", {"key": b64(key)})

    def compact(self) -> int:
        """Compact the history up to the current revision; that revision."""
        revision = int(self.call("kv/range", {"key": b64("/")})["header"]["revision"])
        self.call("kv/compaction", {"revision": str(revision), "physical": True})
        return revision

    def _root_token(self, member: EtcdMember) -> str:
        answer = member.call("auth/authenticate", {"name": "root", "password": ROOT_PASSWORD})
        return str(answer["token"])

    def etcdctl(self, *args: str, user: str | None = None) -> str:
        """Run ``etcdctl`` against the cluster; its output."""
        env = {**os.environ, "ETCDCTL_API": "3"}
        command = [ETCDCTL, "--endpoints", ",".join(m.client_url for m in self.running())]
        if self.tls is not None:
            command += [
                "--cacert", str(self.tls.ca_cert),
                "--cert", str(self.tls.client_cert),
                "--key", str(self.tls.client_key),
            ]  # fmt: skip
        if user:
            command += ["--user", user]
        done = subprocess.run(
            [*command, *args], env=env, capture_output=True, text=True, timeout=30, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def enable_auth(self, prefix: str = BATON_PREFIX) -> None:
        """Create ``root`` and a least-privilege ``baton`` user (readwrite on ``prefix/``
        only), then turn authentication on."""
        self.etcdctl("user", "add", f"root:{ROOT_PASSWORD}")
        self.etcdctl("role", "add", "baton")
        self.etcdctl(
            "role", "grant-permission", "baton", "readwrite", "--prefix=true", prefix + "/"
        )
        self.etcdctl("user", "add", f"baton:{BATON_PASSWORD}")
        self.etcdctl("user", "grant-role", "baton", "baton")
        self.etcdctl("auth", "enable")
        self.auth = True


def status_of(member: EtcdMember) -> dict[str, Any]:
    """The member's ``maintenance/status`` answer (for debugging a failed test)."""
    return member.call("maintenance/status", {})


__all__ = [
    "BATON_PASSWORD",
    "BATON_PREFIX",
    "ETCD",
    "EtcdCluster",
    "EtcdMember",
    "TlsFiles",
    "make_tls_files",
    "status_of",
]
