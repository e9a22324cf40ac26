"""One replica: backend + elector + runner, started together and stopped in the safe order.

It is also what the HTTP endpoints read (a :class:`~scheduler.ops.http.StatusSource`).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from scheduler import __version__
from scheduler.backends.base import LeaseBackend
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import BackendError, BackendPermanentError, ConfigError
from scheduler.firing.runner import Runner
from scheduler.jobs.spec import JobSpec
from scheduler.leadership.controls import OperatorControls
from scheduler.leadership.elector import Elector
from scheduler.leadership.lease import Holder
from scheduler.ops.config import Settings
from scheduler.ops.http import StatusServer, public_run
from scheduler.ops.logs import get_logger, set_level
from scheduler.ops.metrics import Metrics

#: Seconds between reads of the presence records while checking that no live replica uses
#: this replica's id (see Replica.check_replica_id).
DUPLICATE_POLL = 0.2
#: Runs per job in /status (and the status page): the last few outcomes at a glance.
RECENT_RUNS = 5
#: Above this many jobs /status reads one run per job, not RECENT_RUNS (it is polled by the
#: status page every few seconds; 10,000 jobs x 5 runs would be a 10 MB document).
RECENT_JOBS_MAX = 500
#: Runs, newest first across every job, in /status ``recent_runs``.
RECENT_LIMIT = 30


class StopFlag(Protocol):
    """What :meth:`Replica.run` waits on: a :class:`threading.Event`, or the CLI's
    signal-aware flag (``scheduler/ops/cli/signals.py``)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class Replica:
    """Everything one ``baton run`` process does.

    Args:
        settings: validated settings.
        specs: the loaded jobs.
        backend: an open backend (default: opened from ``settings.backend``).
        clock: time source for every deadline.
        loop: the event loop ``async def`` jobs run on (an embedding host's); ``None``:
            Baton's own loop thread.
    """

    def __init__(
        self,
        settings: Settings,
        specs: Sequence[JobSpec],
        backend: LeaseBackend | None = None,
        clock: Clock = SYSTEM_CLOCK,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        set_level(settings.log_level)  # before any logger below is bound
        timings = settings.timings()
        self.backend = backend or settings.open_backend(timings.op_timeout, clock)
        self.holder = Holder.new(settings.replica_id)
        self.metrics = Metrics()
        self.elector = Elector(
            self.backend,
            settings.cluster,
            self.holder,
            timings,
            clock,
            metrics=self.metrics,
            jobs=[spec.name for spec in specs],
        )
        self.runner = Runner(
            specs,
            self.elector,
            self.backend,
            settings.cluster,
            settings.history_limit,
            clock,
            exit_on_lost=settings.exit_on_lost,
            replica_id=self.holder.replica_id,
            timings=timings,
            metrics=self.metrics,
            max_workers=settings.max_workers,
            loop=loop,
        )
        self.log = get_logger(replica=settings.replica_id)
        self._timings = timings
        self.elector.on_resign_request(self._resign_gracefully)
        self.http: StatusServer | None = None
        if settings.http.port:
            host, port = settings.http.host, settings.http.port
            try:
                self.http = StatusServer(self, host, port)
            except OSError as exc:
                raise ConfigError(
                    "http.port", f"cannot listen on {host}:{port}: {exc.strerror}"
                ) from None

    def _resign_gracefully(self, term: object) -> None:
        """Operator asked us to step down: let running jobs finish (bounded), then release."""

        def step_down() -> None:
            grace = self.settings.shutdown_grace
            self.runner.hold_fires(True)
            if not self.runner.wait_idle(grace):
                self.log.warning("resign_grace_exceeded", shutdown_grace=grace)
            self.elector.resign()
            self.runner.hold_fires(False)

        threading.Thread(target=step_down, name="baton-resign", daemon=True).start()

    @property
    def replica_id(self) -> str:
        return self.settings.replica_id

    def liveness_problem(self) -> str | None:
        """Why this replica should be restarted (/healthz), or ``None``."""
        return self.elector.health_problem() or self.runner.loop_problem()

    def readiness_problem(self) -> str | None:
        """Why this replica is not ready (/readyz), or ``None``."""
        if not self.runner.specs:
            return "no jobs loaded"
        refusal = self.elector.refusal
        if refusal is not None:
            return f"refused for good, not retried (fix, then wait for the re-check): {refusal}"
        if not self.elector.backend_ok:
            return f"backend {self.backend.url} not reachable (yet)"
        return self.runner.loop_problem()

    def metrics_text(self) -> bytes:
        """The Prometheus text exposition of this replica's metrics (/metrics)."""
        return self.metrics.render()

    def status(self) -> dict[str, Any]:
        """The /status document: who this replica is, whether it leads, its jobs with their
        recent runs, and what it sees of the cluster (the leader, live replicas, pauses).

        Failed runs show their exception type only unless ``http.status_error_text``. Each
        backend read is bounded by the operation timeout; one that fails leaves its part
        out, saying why (``last_run_error``, ``cluster_error``).
        """
        error_text = self.settings.http.status_error_text
        term = self.elector.current_term()
        now = self._clock.now()
        cluster = self.settings.cluster
        jobs = []
        # Every job's recent runs in one read (not one round trip per job).
        names = [spec.name for spec in self.runner.specs]
        per_job = RECENT_RUNS if len(names) <= RECENT_JOBS_MAX else 1
        try:
            last_runs = self.backend.history_many(cluster, names, per_job)
            error = None
        except BackendError as exc:
            last_runs, error = {}, str(exc)
        recent: list[dict[str, Any]] = []
        for spec in self.runner.specs:
            next_fire = spec.next_fire(now)
            item: dict[str, Any] = {
                "name": spec.name,
                "schedule": spec.schedule,
                "next_fire": next_fire.isoformat() if next_fire else None,
                "last_run": None,
                "recent": [],
            }
            if error is not None:
                item["last_run_error"] = error
            else:
                runs = [public_run(run, error_text) for run in last_runs.get(spec.name, [])]
                item["last_run"] = runs[0] if runs else None
                item["recent"] = runs
                recent.extend(runs)
            jobs.append(item)
        recent.sort(key=lambda run: run["scheduled_time"], reverse=True)
        doc: dict[str, Any] = {
            "replica_id": self.settings.replica_id,
            "cluster": cluster,
            "backend": self.backend.url,
            "version": __version__,
            "is_leader": term is not None,
            "token": term.token if term else None,
            "lease_time_left": round(term.lease_deadline() - self._clock.monotonic(), 3)
            if term
            else None,
            "backend_reachable": self.elector.backend_ok,
            "jobs": jobs,
            "recent_runs": recent[:RECENT_LIMIT],
            "paused": sorted(self.elector.controls.current.paused),
            "leader": None,
            "replicas": [],
        }
        try:
            record = self.backend.read(cluster)
            members = self.backend.members(cluster)
            # As stored now, not as this replica last refreshed them (up to 2 renewals ago).
            doc["paused"] = sorted(OperatorControls.parse(self.backend.controls(cluster)).paused)
        except BackendError as exc:
            doc["cluster_error"] = str(exc)
            return doc
        if record is not None:
            doc["leader"] = {
                "replica_id": record.replica_id,
                "host": record.host,
                "token": record.token,
                "since": record.since.isoformat(),
                "ttl_left": None if record.ttl_left is None else round(record.ttl_left, 3),
            }
        doc["replicas"] = [
            {
                "replica_id": m.replica_id,
                "host": m.host,
                "version": m.version,
                "started": m.started.isoformat(),
                "last_seen": m.last_seen.isoformat(),
            }
            for m in sorted(members, key=lambda m: m.replica_id)
        ]
        return doc

    def preflight(self) -> None:
        """Check, before joining, that the backend allows every operation a replica needs.

        Runs the backend's ``check`` and ``preflight`` (each operation once, harmlessly). No
        answer is not fatal: it is logged and the elector keeps retrying.

        Raises:
            BackendPermanentError: refused for good (credentials, an ACL, a read-only
                database, a newer schema, ZooKeeper nodes not under our ACL); the backend
                is closed and nothing was started.
        """
        try:
            self.backend.check()
            self.backend.preflight(self.settings.cluster)
        except BackendPermanentError:
            self.backend.close()
            raise
        except BackendError as exc:
            self.log.warning("backend_unavailable", error=str(exc), detail="will keep retrying")

    def check_replica_id(self, stop: StopFlag) -> None:
        """Refuse to start while another live replica of the cluster has our replica id.

        Two replicas with one id would share a presence record and look like one replica in
        ``baton status``, history and logs. A presence record with our id is either a live
        replica's, refreshed at least every 2 x renew_interval, or one left by a replica that
        died (it expires lease_ttl after its last refresh; on ZooKeeper with its session).
        So the record is watched until it changes (alive: refuse), disappears, or stays the
        same for lease_ttl + renew_interval (left behind: go on). A restart after a clean
        shutdown finds no record (withdrawn) and does not wait. Two replicas started within
        one announcement of each other are not told apart; nor is anything checked while
        the backend does not answer (the elector retries it).

        Raises:
            ConfigError: another live replica uses this replica id.
        """
        me, t = self.settings.replica_id, self._timings
        deadline = self._clock.monotonic() + t.lease_ttl + t.renew_interval
        first = None
        while not stop.is_set():
            try:
                found = [
                    m for m in self.backend.members(self.settings.cluster) if m.replica_id == me
                ]
            except BackendError as exc:
                self.log.warning("replica_id_unchecked", error=str(exc))
                return
            if not found:
                return
            if first is None:
                first = found[0]
                self.log.info(
                    "replica_id_check",
                    detail="a presence record with this replica id exists; "
                    "waiting to see whether its replica is alive",
                )
            elif found[0] != first:
                other = found[0]
                self.backend.close()
                raise ConfigError(
                    "replica_id",
                    f"another live replica uses {me!r} (host {other.host[:60]!r}, started "
                    f"{other.started.isoformat(timespec='seconds')}); "
                    "give each replica its own replica_id",
                )
            if self._clock.monotonic() >= deadline:
                return  # never refreshed: left by a replica that is gone
            stop.wait(DUPLICATE_POLL)

    def run(self, stop: StopFlag) -> None:
        """Elect and fire until ``stop`` is set, then shut down gracefully.

        Raises:
            ConfigError: another live replica uses this replica id (nothing was started).
        """
        if not self.begin(stop):
            return
        stop.wait()
        self.shutdown()

    def begin(self, stop: StopFlag) -> bool:
        """Check the replica id, then start the runner, the elector and the HTTP server.

        Returns:
            False if ``stop`` was set while checking (nothing started, backend closed).

        Raises:
            ConfigError: another live replica uses this replica id (nothing was started).
        """
        self.check_replica_id(stop)
        if stop.is_set():  # a signal while checking: nothing was started
            self.backend.close()
            return False
        t = self._timings
        self.log.info(
            "replica_started",
            cluster=self.settings.cluster,
            backend=self.backend.url,
            # The first names only: with 10,000 jobs the whole list is a 200 kB line.
            jobs=[spec.name for spec in self.runner.specs[:10]],
            job_count=len(self.runner.specs),
            lease_ttl=t.lease_ttl,
            renew_interval=round(t.renew_interval, 3),
            renew_deadline=round(t.renew_deadline, 3),
        )
        self.runner.start()
        self.elector.start()
        if self.http is not None:
            self.http.start()
            self.log.info("http_serving", host=self.settings.http.host, port=self.http.port)
        return True

    def shutdown(self) -> None:
        """Stop new fires, wait ``shutdown_grace`` for running jobs, release, close."""
        grace = self.settings.shutdown_grace
        self.log.info("shutdown_started", shutdown_grace=grace)
        self.runner.stop_firing()
        if not self.runner.wait_idle(grace):
            self.log.warning("shutdown_grace_exceeded", shutdown_grace=grace)
        # The lease was renewed while jobs finished; releasing now wakes followers at once.
        self.elector.stop(release=True)
        self.elector.presence.withdraw()
        self.runner.close()
        self.backend.close()
        if self.http is not None:
            self.http.stop()
        self.log.info("replica_stopped")
