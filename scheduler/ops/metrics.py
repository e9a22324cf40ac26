"""Prometheus metrics of one replica (names prefixed ``baton_``), in a registry of its own.

The elector and the runner report what happens; nothing here decides anything. Served at
``/metrics`` by :mod:`scheduler.ops.http`.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

# The *_created series double the exposition for no use in alerting or dashboards.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

# Seconds. Renewals and claims are single round trips (ms); runs and lateness span more.
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LATENESS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0)
_DURATION = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
# Fires per claim batch: one alone up to a whole burst of 10,000 jobs.
_BATCH = (1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000)


class JobSeries:
    """The series of one job a run updates: children of the labelled metrics, resolved once
    (``labels()`` takes the metric's lock at each call, which every worker of the job pool
    would contend for at every run).

    Args:
        metrics: the replica's metrics.
        job: the job's name.
    """

    def __init__(self, metrics: Metrics, job: str) -> None:
        self._metrics = metrics
        self._job = job
        self.lateness = metrics.fire_lateness.labels(job)
        self.duration = metrics.job_duration.labels(job)
        self._runs: dict[str, Counter] = {}

    def runs(self, outcome: str) -> Counter:
        """The ``baton_job_runs{job, outcome}`` child (made at its first run)."""
        child = self._runs.get(outcome)
        if child is None:
            child = self._runs[outcome] = self._metrics.job_runs.labels(self._job, outcome)
        return child


class Metrics:
    """Every Baton metric of one replica."""

    def __init__(self) -> None:
        self._series: dict[str, JobSeries] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.is_leader = Gauge("baton_is_leader", "1 while this replica leads, else 0.", registry=r)
        self.leader_transitions = Counter(
            "baton_leader_transitions", "Times this replica became leader.", registry=r
        )
        self.lease_renewals = Counter(
            "baton_lease_renewals",
            "Lease renewal attempts by result (ok, lost, error).",
            ["result"],
            registry=r,
        )
        self.lease_renew_latency = Histogram(
            "baton_lease_renew_latency_seconds",
            "Round trip of successful lease renewals.",
            buckets=_FAST,
            registry=r,
        )
        self.lease_time_left = Gauge(
            "baton_lease_time_left_seconds",
            "Seconds left on the lease's local deadline, set at each renewal.",
            registry=r,
        )
        self.leadership_lost = Counter(
            "baton_leadership_lost",
            "Leadership terms ended, by reason (renew_deadline, expired, shutdown, ...).",
            ["reason"],
            registry=r,
        )
        self.job_runs = Counter(
            "baton_job_runs",
            "Job runs on this replica by outcome (ok, error, lost).",
            ["job", "outcome"],
            registry=r,
        )
        self.job_duration = Histogram(
            "baton_job_duration_seconds",
            "Wall time of job runs.",
            ["job"],
            buckets=_DURATION,
            registry=r,
        )
        self.fire_lateness = Histogram(
            "baton_fire_lateness_seconds",
            "Job start minus scheduled fire instant.",
            ["job"],
            buckets=_LATENESS,
            registry=r,
        )
        self.claims = Counter(
            "baton_claims",
            "Fire claims by result (claimed, duplicate, lease_lost, error, confirmed_late, "
            "withdrawn, already_attempted).",
            ["result"],
            registry=r,
        )
        self.fires_skipped = Counter(
            "baton_fires_skipped",
            "Fires this leader did not run, by reason (coalesced, missed, paused, "
            "claimed_elsewhere, backend_unconfirmed, lease_lost, abandoned, not_started, "
            "shutdown, already_attempted). The reason is the only label: bounded at any "
            "number of jobs.",
            ["reason"],
            registry=r,
        )
        self.claim_batch = Histogram(
            "baton_claim_batch_size",
            "Fires per batch the leader sends to claim (one backend call per batch).",
            buckets=_BATCH,
            registry=r,
        )

    def job_series(self, job: str) -> JobSeries:
        """The per-job series of ``job`` (made once; a race makes them twice: harmless)."""
        series = self._series.get(job)
        if series is None:
            series = self._series[job] = JobSeries(self, job)
        return series

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
