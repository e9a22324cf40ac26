"""One real ``baton run`` process on the embedded SQLite backend serving its HTTP endpoints,
for the tests that attack those endpoints (tests/scenarios/test_http_abuse.py,
tests/badinput/test_http_cases.py).

Its jobs are tests.jobs.http (one fails with a secret in its message). The replica's stderr
(its JSON log) and stdout go to separate files, so a test can assert that nothing but log
lines was written; ``nofile`` starts it under a file-descriptor limit (a container's
``ulimit -n``).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.harness.process_server import HOST, free_port
from tests.harness.replicas import ROOT, wait_for
from tests.jobs.http import SECRET

__all__ = ["SECRET", "HttpReplica", "read_all", "status_code"]


class HttpReplica:
    """A replica process with ``http.port`` on a free loopback port.

    Args:
        workdir: its working directory (the database, the logs).
        nofile: RLIMIT_NOFILE of the process, or ``None`` to inherit.
        env: extra ``BATON_*`` settings.
    """

    def __init__(
        self, workdir: Path, nofile: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = free_port()
        self.stdout_path = workdir / "stdout.log"
        self.stderr_path = workdir / "stderr.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        environ.update(
            {
                "PYTHONPATH": str(ROOT),
                "BATON_BACKEND": f"sqlite:///{workdir}/baton.db",
                "BATON_CLUSTER": "http",
                "BATON_REPLICA_ID": "r1",
                "BATON_JOBS": "tests.jobs.http",
                "BATON_LOG_FORMAT": "json",
                "BATON_LEASE_TTL": "3",
                "BATON_SHUTDOWN_GRACE": "5",
                "BATON_HTTP_HOST": HOST,
                "BATON_HTTP_PORT": str(self.port),
                **(env or {}),
            }
        )

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "run"],
            cwd=workdir,
            env=environ,
            stdout=self.stdout_path.open("wb"),
            stderr=self.stderr_path.open("wb"),
            preexec_fn=limit,
        )
        wait_for(lambda: self.get("/healthz")[0] == 200, 20, "the replica's /healthz")

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        """GET ``path``: status and body; ``(0, "")`` if nothing answered."""
        try:
            url = f"http://{HOST}:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def timed_healthz(self) -> tuple[int, float]:
        """/healthz: status and seconds taken."""
        began = time.monotonic()
        code, _ = self.get("/healthz")
        return code, time.monotonic() - began

    def raw(self, data: bytes, timeout: float = 10.0) -> bytes:
        """Send ``data`` on a fresh connection and read until the server closes it."""
        with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
            if data:
                sock.sendall(data)
            return read_all(sock)

    def connect(self) -> socket.socket:
        return socket.create_connection((HOST, self.port), timeout=10)

    def proc_status(self, field: str) -> int:
        """A numeric field of /proc/<pid>/status (``Threads``, ``VmRSS`` in kB)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == field:
                return int(value.split()[0])
        raise KeyError(field)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_problems(self) -> list[str]:
        """Lines of stderr that are not JSON log lines, or that carry a traceback other than
        a job's own failure (``job_failed`` logs the job's traceback, as it should)."""
        problems = []
        for line in self.stderr().splitlines():
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                problems.append(line)
                continue
            if "Traceback" in line and event.get("event") != "job_failed":
                problems.append(line)
        return problems

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM, wait (SIGKILL after 20 s); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def read_all(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes (a reset ends it too)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def status_code(response: bytes) -> int:
    """The status code of a raw HTTP response; 0 for none."""
    parts = response.split(b"\r\n", 1)[0].split(b" ")
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
