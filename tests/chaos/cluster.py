"""The chaos run's replica processes: started, killed, paused and restarted by name and PID.

Each replica is a real ``python -m scheduler run`` configured by ``BATON_*`` variables, with
the chaos workload, its own backend URL (its own proxy port) and its own fake clock. Every
incarnation of a replica logs to its own file, so the logs of a killed one are kept.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.chaos.faketime import FakeClocks
from tests.chaos.targets import Target
from tests.harness.replicas import ROOT, ReplicaProcess


class Replicas:
    """N replicas of one election, each under libfaketime.

    Args:
        workdir: the run's directory (logs go to ``workdir/logs``).
        target: the backend under test (gives each replica its URL).
        clocks: the replicas' fake clocks.
        cluster: election name.
        ledger_socket: the ledger server's socket.
        settings: extra ``BATON_<KEY>`` settings (lease_ttl, ...).
    """

    def __init__(
        self,
        workdir: Path,
        target: Target,
        clocks: FakeClocks,
        cluster: str,
        ledger_socket: str,
        settings: dict[str, Any],
    ) -> None:
        self.workdir = workdir
        self.logdir = workdir / "logs"
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.target = target
        self.clocks = clocks
        self.cluster = cluster
        self.ledger_socket = ledger_socket
        self.settings = settings
        self.procs: dict[str, ReplicaProcess] = {}
        self.incarnations: dict[str, int] = {}
        self.paused: set[str] = set()
        #: (replica, pid, exit status) of every process that ended without the suite's say.
        self.unexpected_exits: list[tuple[str, int, int]] = []
        self.history: list[ReplicaProcess] = []

    @property
    def names(self) -> list[str]:
        return sorted(self.procs)

    def start(self, name: str) -> ReplicaProcess:
        """Start (or restart) replica ``name``."""
        n = self.incarnations.get(name, 0) + 1
        self.incarnations[name] = n
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
                "BATON_BACKEND": self.target.url_for(name),
                "BATON_CLUSTER": self.cluster,
                "BATON_REPLICA_ID": name,
                "BATON_JOBS": "tests.chaos.workload",
                "BATON_LOG_FORMAT": "json",
                "BATON_CHAOS_LEDGER": self.ledger_socket,
            }
        )
        env.update({f"BATON_{k.upper()}": str(v) for k, v in self.settings.items()})
        env.update(self.target.env_for(name))
        env.update(self.clocks.env(name))
        log_path = self.logdir / f"{name}.{n}.log"
        with log_path.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "scheduler", "run"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        replica = ReplicaProcess(name, proc, log_path)
        self.procs[name] = replica
        self.history.append(replica)
        self.paused.discard(name)
        return replica

    def alive(self, name: str) -> bool:
        replica = self.procs.get(name)
        return replica is not None and replica.alive

    def pid(self, name: str) -> int:
        return self.procs[name].proc.pid

    def kill(self, name: str) -> int:
        """kill -9 replica ``name``; returns its pid."""
        replica = self.procs[name]
        replica.signal(signal.SIGKILL)
        replica.proc.wait(timeout=10)
        self.paused.discard(name)
        return replica.proc.pid

    def pause(self, name: str) -> None:
        self.procs[name].signal(signal.SIGSTOP)
        self.paused.add(name)

    def resume(self, name: str) -> None:
        if self.alive(name):
            self.procs[name].signal(signal.SIGCONT)
        self.paused.discard(name)

    def reap(self) -> list[str]:
        """Restart replicas that ended on their own; returns their names."""
        restarted = []
        for name, replica in list(self.procs.items()):
            code = replica.proc.poll()
            if code is not None and code != -signal.SIGKILL:
                self.unexpected_exits.append((name, replica.proc.pid, code))
                self.start(name)
                restarted.append(name)
        return restarted

    def stop_all(self, timeout: float = 30.0) -> None:
        """SIGCONT and SIGTERM every replica, then wait (SIGKILL after ``timeout``)."""
        for replica in self.procs.values():
            if replica.alive:
                replica.signal(signal.SIGCONT)
                replica.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for replica in self.procs.values():
            try:
                replica.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait()
