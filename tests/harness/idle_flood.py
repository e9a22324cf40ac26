"""Idle connections held against a server by a process of their own, as an attacker's would be.

The flood runs outside the test's process, so a probe in the test shares no GIL with it and
the two race as a kubelet and an attacker do. The server evicts its oldest idle connection
for each new one, but none in its first ``EVICT_AFTER`` seconds
(scheduler/ops/http/server.py): with the flood in the test's own process, the GIL hid how
often a probe stalled for a moment between its connect and its request was evicted; from a
process of its own, half the runs showed it before that rule.

Run as ``python -m tests.harness.idle_flood HOST PORT COUNT DONE_FILE``: it opens ``COUNT``
connections in bursts of :data:`BURST` (each far more than the server reads at once, so that
every burst evicts), writes ``DONE_FILE`` and holds them until it is killed.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.harness.replicas import ROOT, wait_for

#: Connections opened back to back, then :data:`PAUSE` seconds: spread over about a second,
#: so that probes run while the server is working through the flood.
BURST = 200
PAUSE = 0.05


class IdleFlood:
    """``count`` idle connections to ``host:port`` from a child process (see the module)."""

    def __init__(self, host: str, port: int, count: int, workdir: Path) -> None:
        self.done = workdir / "flood-held"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, host, str(port), str(count), str(self.done)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    @property
    def held(self) -> bool:
        """Whether every connection is open (a failed flood raises instead)."""
        if self.proc.poll() is not None:
            raise AssertionError(f"the flood exited with {self.proc.returncode}")
        return self.done.exists()

    def wait_held(self, timeout: float) -> None:
        wait_for(lambda: self.held, timeout, "the flood's connections")

    def stop(self) -> None:
        """Kill the flood: the kernel closes its connections."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def main(host: str, port: int, count: int, done: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = count + 64
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held: list[socket.socket] = []
    while len(held) < count:
        for _ in range(min(BURST, count - len(held))):
            held.append(socket.create_connection((host, port), timeout=10))
        time.sleep(PAUSE)
    done.write_text(str(len(held)))
    signal.pause()  # hold them until killed


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
