"""Groups of processes contending for one leadership, for the failover measurements.

A group starts its processes, tells who leads (as an observer, from the backend), when a
process says it became leader (from that process's own log), whether every follower is in
place, and how long the current lease has left on the server.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import redis

from benchmarks.procs import json_lines, log_time, start_module, stop
from tests.harness.replicas import Cluster

#: Module holding the job every Baton replica of the benchmarks loads.
BENCH_JOBS = "benchmarks.jobs"


class ExpiryProbe(Protocol):
    """Finds the wall time at which the server expires a killed leader's lease."""

    def reaped(self) -> None:
        """The killed process has been reaped: no renewal of it can arrive any more."""
        ...

    def expiry(self) -> float | None:
        """Wall time of the server-side expiry, once a new leader is seen; ``None`` if unknown."""
        ...


class TtlProbe:
    """Expiry from the lease's remaining TTL, read once the killed holder is reaped."""

    def __init__(self, ttl_left: Callable[[], float | None]) -> None:
        self._ttl_left = ttl_left
        self._expiry: float | None = None

    def reaped(self) -> None:
        before = time.time()
        left = self._ttl_left()
        after = time.time()
        self._expiry = None if left is None else (before + after) / 2 + left

    def expiry(self) -> float | None:
        return self._expiry


class ThreadProbe:
    """Expiry seen from a thread of the probe's own, started before the kill: a subclass
    sets its fields, calls ``__init__`` (which starts :meth:`_run`), and :meth:`_run` sets
    ``_expiry`` to the wall time at which the server let go."""

    def __init__(self, thread_name: str) -> None:
        self._expiry: float | None = None
        self._thread = threading.Thread(target=self._run, name=thread_name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        raise NotImplementedError

    def reaped(self) -> None:
        pass

    def expiry(self) -> float | None:
        self._thread.join(10.0)
        return self._expiry


class Group(Protocol):
    """Processes electing one leader among themselves."""

    label: str
    names: list[str]

    def start(self) -> None:
        """Start every process."""
        ...

    def leader(self) -> tuple[str, str] | None:
        """(process name, identity of its lease) of the current holder, as the backend says."""
        ...

    def acquired_at(self, name: str, ident: str) -> float | None:
        """Wall time at which process ``name`` logged that it leads with lease ``ident``."""
        ...

    def ready(self, leader: str) -> bool:
        """Whether every process other than ``leader`` is up and waiting for the lease."""
        ...

    def released_at(self, name: str) -> float | None:
        """Wall time at which (exited) process ``name`` logged that it released its lease."""
        ...

    def expiry_probe(self, name: str) -> ExpiryProbe:
        """Called right before ``name`` (the leader) is killed: finds out when the server
        expires its lease."""
        ...

    def pid(self, name: str) -> int: ...

    def reap(self, name: str, timeout: float) -> None:
        """Wait for process ``name`` to exit."""
        ...

    def restart(self, name: str) -> None:
        """Start process ``name`` again (after it exited)."""
        ...

    def close(self) -> None:
        """Stop every process (SIGTERM by PID, then SIGKILL) and release resources."""
        ...


class BatonGroup:
    """Baton replicas (``python -m scheduler run``) on one backend.

    Args:
        label: name in the tables.
        backend_url: the backend every replica uses.
        cluster: election name.
        workdir: logs and the sink go here.
        names: replica ids.
        settings: ``BATON_<KEY>`` settings of every replica (e.g. ``lease_ttl=2``).
        env: extra environment (e.g. ``BATON_BENCH_EVERY``).
        waiting: backend-specific check that the followers wait for the lease; gets the
            group and the names of the live followers.
    """

    def __init__(
        self,
        label: str,
        backend_url: str,
        cluster: str,
        workdir: Path,
        names: list[str],
        settings: dict[str, Any],
        env: dict[str, str] | None = None,
        waiting: Callable[[BatonGroup, list[str]], bool] | None = None,
    ) -> None:
        self.label = label
        self.names = names
        self.settings = settings
        self.cluster = Cluster(
            backend_url, cluster, workdir, env={"BATON_JOBS": BENCH_JOBS, **(env or {})}
        )
        self._waiting = waiting

    def start(self) -> None:
        for name in self.names:
            self.cluster.start_replica(name, **self.settings)

    def leader(self) -> tuple[str, str] | None:
        record = self.cluster.leader()
        if record is None:
            return None
        return record.replica_id, str(record.token)

    def acquired_at(self, name: str, ident: str) -> float | None:
        for event in self.cluster.replicas[name].events("leadership_acquired"):
            if str(event.get("token")) == ident:
                return log_time(event)
        return None

    def released_at(self, name: str) -> float | None:
        found = self.cluster.replicas[name].events("lease_released")
        return log_time(found[-1]) if found else None

    def ready(self, leader: str) -> bool:
        replicas = self.cluster.replicas
        if not all(replicas[name].alive for name in self.names):
            return False
        followers = [name for name in self.names if name != leader]
        if not all(replicas[name].events("replica_started") for name in followers):
            return False
        return self._waiting is None or self._waiting(self, followers)

    def ttl_left(self) -> float | None:
        record = self.cluster.observer.read(self.cluster.name)
        return None if record is None else record.ttl_left

    def expiry_probe(self, name: str) -> ExpiryProbe:
        return TtlProbe(self.ttl_left)

    def pid(self, name: str) -> int:
        return self.cluster.replicas[name].proc.pid

    def reap(self, name: str, timeout: float) -> None:
        self.cluster.replicas[name].proc.wait(timeout=timeout)

    def restart(self, name: str) -> None:
        self.cluster.start_replica(name, **self.settings)

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        return self.cluster.replicas[name].events(event)

    def close(self) -> None:
        try:
            self.cluster.stop()
        finally:
            self.cluster.observer.close()


class RedisSubscribers:
    """Readiness of Baton followers on Redis: each is subscribed to the release channel.

    Baton's follower subscribes to ``baton:{cluster}:events`` at its first wait and stays
    subscribed (also once it leads). ``PUBSUB NUMSUB`` must count every live follower plus
    the live processes known to have subscribed before.
    """

    def __init__(self, client: redis.Redis, cluster: str) -> None:
        self.client = client
        self.channel = f"baton:{{{cluster}}}:events"
        self.subscribed: set[str] = set()

    def __call__(self, group: BatonGroup, followers: list[str]) -> bool:
        live = {name for name in group.names if group.cluster.replicas[name].alive}
        expected = set(followers) | (self.subscribed & live)
        counts = dict(self.client.pubsub_numsub(self.channel))
        count = int(next(iter(counts.values()), 0))
        if count == len(expected):
            self.subscribed = expected
            return True
        return False


class RefGroup:
    """Reference processes (``benchmarks/*_ref.py``) writing JSON-lines events (``started``,
    ``acquired``, ``released``; see ``benchmarks/refproc.py``).

    Subclasses give the process's options (:meth:`args`), how the server names the holder
    (:meth:`leader`, matched with :meth:`holder`), readiness and the expiry probe.

    Args:
        label: name in the tables.
        module: the reference process, run as ``python -m module``.
        workdir: logs and event files go here.
        names: process names.
    """

    #: The field of an ``acquired`` event that names the lease the server reports.
    ident_field = ""

    def __init__(self, label: str, module: str, workdir: Path, names: list[str]) -> None:
        self.label = label
        self.module = module
        self.workdir = workdir
        self.names = names
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        workdir.mkdir(parents=True, exist_ok=True)

    def args(self, name: str) -> list[str]:
        """The options of process ``name`` but ``--events``."""
        raise NotImplementedError

    def _events_path(self, name: str) -> Path:
        return self.workdir / f"{name}.events.jsonl"

    def _start(self, name: str) -> None:
        events = self._events_path(name)
        events.unlink(missing_ok=True)
        args = [*self.args(name), "--events", str(events)]
        self.procs[name] = start_module(self.module, args, self.workdir / f"{name}.log")

    def start(self) -> None:
        for name in self.names:
            self._start(name)

    def events(self, name: str, event: str) -> list[dict[str, Any]]:
        return [e for e in json_lines(self._events_path(name)) if e.get("event") == event]

    def holder(self, value: object) -> tuple[str, str] | None:
        """(process name, ``value`` as text) of the process that logged acquiring ``value``."""
        for name in self.names:
            if any(e.get(self.ident_field) == value for e in self.events(name, "acquired")):
                return name, str(value)
        return None  # acquired, but not logged yet

    def acquired_at(self, name: str, ident: str) -> float | None:
        for event in self.events(name, "acquired"):
            if str(event.get(self.ident_field)) == ident:
                return float(event["t"])
        return None

    def released_at(self, name: str) -> float | None:
        found = self.events(name, "released")
        return float(found[-1]["t"]) if found else None

    def started(self, leader: str) -> bool:
        """Every process is alive and each but ``leader`` logged that it started."""
        if not all(self.procs[name].poll() is None for name in self.names):
            return False
        return all(self.events(name, "started") for name in self.names if name != leader)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def reap(self, name: str, timeout: float) -> None:
        self.procs[name].wait(timeout=timeout)

    def restart(self, name: str) -> None:
        self._start(name)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            stop(proc)


class RedisLockGroup(RefGroup):
    """Reference processes electing a leader with redis-py's ``Lock`` (``redis_lock_ref``)."""

    ident_field = "token"

    def __init__(
        self,
        label: str,
        url: str,
        key: str,
        workdir: Path,
        names: list[str],
        ttl: float,
        job_every: float = 0.0,
    ) -> None:
        super().__init__(label, "benchmarks.redis_lock_ref", workdir, names)
        self.url = url
        self.key = key
        self.ttl = ttl
        self.job_every = job_every
        self.client = redis.Redis.from_url(url, decode_responses=True)

    def args(self, name: str) -> list[str]:
        args = ["--url", self.url, "--name", self.key, "--ttl", str(self.ttl)]
        return [*args, "--job-every", str(self.job_every)]

    def leader(self) -> tuple[str, str] | None:
        token = self.client.get(self.key)
        return None if token is None else self.holder(token)

    def ready(self, leader: str) -> bool:
        return self.started(leader)

    def ttl_left(self) -> float | None:
        pttl = int(self.client.pttl(self.key))
        return pttl / 1000 if pttl >= 0 else None

    def expiry_probe(self, name: str) -> ExpiryProbe:
        return TtlProbe(self.ttl_left)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.client.close()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
