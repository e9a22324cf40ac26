"""One replica: backend + elector + runner, started together and stopped in the safe order."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from scheduler.backends.base import LeaseBackend
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.config import Settings
from scheduler.elector import Elector
from scheduler.errors import ConfigError
from scheduler.http import StatusServer
from scheduler.jobs import JobSpec
from scheduler.lease import Holder
from scheduler.logs import get_logger
from scheduler.metrics import Metrics
from scheduler.runner import Runner


class Replica:
    """Everything one ``baton run`` process does.

    Args:
        settings: validated settings.
        specs: the loaded jobs.
        backend: an open backend (default: opened from ``settings.backend``).
        clock: time source for every deadline.
    """

    def __init__(
        self,
        settings: Settings,
        specs: Sequence[JobSpec],
        backend: LeaseBackend | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        timings = settings.timings()
        self.backend = backend or settings.open_backend(timings.op_timeout, clock)
        self.holder = Holder.new(settings.replica_id)
        self.metrics = Metrics()
        self.elector = Elector(
            self.backend, settings.cluster, self.holder, timings, clock, self.metrics
        )
        self.runner = Runner(
            specs,
            self.elector,
            self.backend,
            settings.cluster,
            settings.history_limit,
            clock,
            exit_on_lost=settings.exit_on_lost,
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

    def liveness_problem(self) -> str | None:
        """Why this replica should be restarted (/healthz), or ``None``."""
        return self.elector.health_problem() or self.runner.loop_problem()

    def readiness_problem(self) -> str | None:
        """Why this replica is not ready (/readyz), or ``None``."""
        if not self.runner.specs:
            return "no jobs loaded"
        if not self.elector.backend_ok:
            return f"backend {self.backend.url} not reachable (yet)"
        return self.runner.loop_problem()

    def run(self, stop: threading.Event) -> None:
        """Elect and fire until ``stop`` is set, then shut down gracefully."""
        t = self._timings
        self.log.info(
            "replica_started",
            cluster=self.settings.cluster,
            backend=self.backend.url,
            jobs=[spec.name for spec in self.runner.specs],
            lease_ttl=t.lease_ttl,
            renew_interval=round(t.renew_interval, 3),
            renew_deadline=round(t.renew_deadline, 3),
        )
        self.runner.start()
        self.elector.start()
        if self.http is not None:
            self.http.start()
            self.log.info("http_serving", host=self.settings.http.host, port=self.http.port)
        stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        """Stop new fires, wait ``shutdown_grace`` for running jobs, release, close."""
        grace = self.settings.shutdown_grace
        self.log.info("shutdown_started", shutdown_grace=grace)
        self.runner.stop_firing()
        if not self.runner.wait_idle(grace):
            self.log.warning("shutdown_grace_exceeded", shutdown_grace=grace)
        # The lease was renewed while jobs finished; releasing now wakes followers at once.
        self.elector.stop(release=True)
        self.elector.withdraw()
        self.runner.close()
        self.backend.close()
        if self.http is not None:
            self.http.stop()
        self.log.info("replica_stopped")
