"""The life cycle shared by the test harnesses that run a real server as a child process.

A subclass says how to launch its server and how to tell that it is ready; this base owns
the process: start, stop and kill by PID, restart on the same port and directory, and the
log tail that goes into every start failure so a broken server explains itself in CI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Self

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ProcessServer(ABC):
    """One server child process bound to ``127.0.0.1:port``, with its own temp dir.

    Args:
        port: the port to bind; a free one when ``None``.
        dir_prefix: the name prefix of the temp dir (so a leaked one says whose it is).
    """

    #: How error messages name the server.
    name: ClassVar[str]
    #: Seconds the server may take to get ready after starting, and to exit after a signal.
    start_timeout: ClassVar[float]
    stop_timeout: ClassVar[float]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Caught here, not in the error path that reads it, where it would hide the server log.
        missing = [a for a in ("name", "start_timeout", "stop_timeout") if not hasattr(cls, a)]
        if missing:
            raise TypeError(f"{cls.__name__} must set {', '.join(missing)}")

    def __init__(self, port: int | None, dir_prefix: str) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=dir_prefix))
        self._process: subprocess.Popen[bytes] | None = None

    @property
    @abstractmethod
    def log_path(self) -> Path:
        """The file the server logs to, kept across restarts."""

    @abstractmethod
    def _launch(self) -> subprocess.Popen[bytes]:
        """Start the server process (without waiting for it to be ready)."""

    @abstractmethod
    def _wait_until_ready(self) -> None:
        """Return once the server takes requests; call :meth:`_wait_until` to do so."""

    @property
    def pid(self) -> int:
        """The server's process id (it must be running)."""
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> Self:
        """Start the server and wait until it takes requests."""
        if self.running:
            raise RuntimeError(f"{self.name} already running on port {self.port}")
        self._process = self._launch()
        self._wait_until_ready()
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited within ``stop_timeout``."""
        self._signal(signal.SIGTERM)
        if not self._wait_exit(self.stop_timeout):
            self._signal(signal.SIGKILL)
            self._wait_exit(self.stop_timeout)
        self._process = None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, with no clean shutdown."""
        self._signal(signal.SIGKILL)
        self._wait_exit(self.stop_timeout)
        self._process = None

    def restart(self) -> None:
        """Start again on the same port and directory (after :meth:`stop` or :meth:`kill`)."""
        if self.running:
            self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server if running and remove its directory."""
        if self.running:
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _wait_until(
        self,
        ready: Callable[[], object],
        waiting_for: str,
        not_yet: tuple[type[Exception], ...],
    ) -> None:
        """Poll ``ready`` until it is true; ``not_yet`` errors mean the server is still starting.

        ``waiting_for`` completes "<name> did not ... on port N" in the timeout error.
        """
        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with status {self._process.returncode} while "
                    f"starting on port {self.port}: {self._log_tail()}"
                )
            try:
                if ready():
                    return
            except not_yet:
                pass
            if time.monotonic() > deadline:
                # A server that never got ready must not outlive the test that started it.
                self.kill()
                raise RuntimeError(
                    f"{self.name} did not {waiting_for} on port {self.port} within "
                    f"{self.start_timeout} s: {self._log_tail()}"
                )
            time.sleep(0.01)

    def _signal(self, sig: signal.Signals) -> None:
        # By PID, and only while the process is ours and alive: a reaped PID may be reused.
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

    def _log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        # What a server prints before its logging is set up (a bad flag, say) goes to stderr.
        if self._process is not None and self._process.stderr is not None:
            try:
                if self._process.poll() is not None:
                    text += self._process.stderr.read().decode(errors="replace")
            except OSError:
                pass
        return text[-2000:] or "(no log output)"
