"""Replica processes for scenario tests: real ``python -m scheduler run`` subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from scheduler.backends import from_url
from scheduler.backends.redis.keys import lease_keys
from scheduler.backends.runs import RunRecord
from scheduler.leadership.lease import LeaseRecord
from tests.harness.sink import Write, read_writes

if TYPE_CHECKING:
    from tests.harness.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.005
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


@dataclass
class ReplicaProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The replica's JSON log lines (optionally only ``event``)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            if event is None or item.get("event") == event:
                out.append(item)
        return out

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Cluster:
    """N replicas of one election on one backend, with a fenced sink for their jobs."""

    backend_url: str
    name: str
    workdir: Path
    env: dict[str, str] = field(default_factory=dict)
    replicas: dict[str, ReplicaProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.sink_path = self.workdir / "sink.db"
        self.observer = from_url(self.backend_url, op_timeout=1.0)

    def start(self, count: int, **settings: Any) -> Cluster:
        for n in range(1, count + 1):
            self.start_replica(f"r{n}", **settings)
        return self

    def start_replica(self, name: str, **settings: Any) -> ReplicaProcess:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
                "BATON_TEST_SINK": str(self.sink_path),
                "BATON_BACKEND": self.backend_url,
                "BATON_CLUSTER": self.name,
                "BATON_REPLICA_ID": name,
                "BATON_JOBS": "tests.jobs.replica",
                "BATON_LOG_FORMAT": "json",
            }
        )
        env.update({f"BATON_{k.upper()}": str(v) for k, v in settings.items()})
        env.update(self.env)
        log_path = self.workdir / f"{name}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "run"],
            env=env,
            cwd=ROOT,
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        replica = ReplicaProcess(name, proc, log_path)
        self.replicas[name] = replica
        return replica

    def leader(self) -> LeaseRecord | None:
        try:
            return self.observer.read(self.name)
        except Exception:
            return None

    def wait_leader(self, timeout: float, not_token: int | None = None) -> LeaseRecord:
        def found() -> LeaseRecord | None:
            record = self.leader()
            if record is not None and record.token != not_token:
                return record
            return None

        return wait_for(found, timeout, "a leader" if not_token is None else "a new leader")

    def observer_history(self, job: str, limit: int) -> list[RunRecord]:
        return self.observer.history(self.name, job, limit)

    def __iter__(self) -> Iterator[ReplicaProcess]:
        return iter(self.replicas.values())

    def stop(self) -> None:
        for replica in self:
            if replica.alive:
                replica.signal(signal.SIGCONT)
                replica.signal(signal.SIGTERM)
        for replica in self:
            try:
                replica.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait()

    def close(self) -> None:
        self.stop()
        self.observer.close()

    def wait_started(self, job: str, what: str, timeout: float = 20) -> Write:
        """The first ``start`` write of ``job`` in the sink, waited for (``what`` names the
        wait in its failure)."""
        started = wait_for(
            lambda: [w for w in read_writes(self.sink_path) if w.job == job and w.phase == "start"],
            timeout,
            what,
        )
        return started[0]

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dump_logs(self) -> str:
        return "\n".join(f"--- {r.name}\n{r.log_path.read_text()[-4000:]}" for r in self)


def sqlite_cluster(tmp: Path, prefix: str, jobs: str) -> Cluster:
    """A cluster on an embedded database in ``tmp``, its election ``<prefix>-<8 hex>``, its
    replicas running the jobs module ``jobs``."""
    return Cluster(
        f"sqlite:///{tmp / 'baton.db'}",
        f"{prefix}-{uuid.uuid4().hex[:8]}",
        tmp / "cluster",
        env={"BATON_JOBS": jobs},
    )


def steal_lease(redis: RedisServer, cluster: str) -> None:
    """Delete the lease of election ``cluster`` on ``redis`` behind its holder's back (a
    foreign client)."""
    client = redis.client()
    try:
        client.delete(lease_keys(cluster)[0])
    finally:
        client.close()
