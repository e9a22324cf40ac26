"""Prometheus metrics of one replica (names prefixed ``baton_``), in a registry of its own.

The elector and the runner report what happens; nothing here decides anything. Served at
``/metrics`` by :mod:`scheduler.ops.http`.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections.abc import Iterator, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

# The *_created series double the exposition for no use in alerting or dashboards.
disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus-client

# Seconds. Renewals and claims are single round trips (ms); runs and lateness span more.
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_LATENESS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0)
_DURATION = (0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
# Fires per claim batch: one alone up to a whole burst of 10,000 jobs.
_BATCH = (1, 2, 5, 10, 50, 100, 500, 1000, 5000, 10000)


class JobHistogram:
    """A histogram labelled by job, kept as one list of bucket counts per job.

    Why not prometheus_client's labelled ``Histogram``: it keeps a child object per job with a
    locked value object per bucket, about 4 KiB per job and histogram: 83 MiB of a leader's
    memory at 10,000 jobs (issue 13). This keeps ~0.5 KiB and exposes the same series
    (``<name>_bucket{job, le}``, ``<name>_sum``, ``<name>_count``).

    Args:
        name: the metric name (without ``_bucket``).
        documentation: its help text.
        buckets: the bucket upper bounds, ascending (``+Inf`` is added).
        registry: where it is exposed.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._doc = documentation
        self._upper = (*(float(b) for b in buckets), math.inf)
        self._le = [floatToGoString(b) for b in self._upper]  # type: ignore[no-untyped-call]
        # Per job: the count of each bucket (not cumulative), then the sum.
        self._rows: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def observe(self, job: str, value: float) -> None:
        index = bisect.bisect_left(self._upper, value)  # the first bound >= value
        with self._lock:
            row = self._rows.get(job)
            if row is None:
                row = self._rows[job] = [0.0] * (len(self._upper) + 1)
            row[index] += 1
            row[-1] += value

    def describe(self) -> list[Metric]:
        return [HistogramMetricFamily(self._name, self._doc, labels=["job"])]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._doc, labels=["job"])
        with self._lock:
            rows = [(job, list(row)) for job, row in self._rows.items()]
        for job, row in rows:
            total = 0.0
            buckets = []
            for le, count in zip(self._le, row, strict=False):
                total += count
                buckets.append((le, total))
            family.add_metric([job], buckets, row[-1])
        yield family


class JobCounter:
    """A counter labelled by job and outcome, kept as one float per pair (for the same reason
    as :class:`JobHistogram`); exposed as ``<name>_total{job, outcome}``.

    Args:
        name: the metric name (without ``_total``).
        documentation: its help text.
        registry: where it is exposed.
    """

    def __init__(self, name: str, documentation: str, registry: CollectorRegistry) -> None:
        self._name = name
        self._doc = documentation
        self._values: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        registry.register(self)

    def inc(self, job: str, outcome: str) -> None:
        key = (job, outcome)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + 1

    def describe(self) -> list[Metric]:
        return [CounterMetricFamily(self._name, self._doc, labels=["job", "outcome"])]

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._doc, labels=["job", "outcome"])
        with self._lock:
            values = list(self._values.items())
        for (job, outcome), value in values:
            family.add_metric([job, outcome], value)
        yield family


class _Observer:
    """One job's side of a :class:`JobHistogram`."""

    __slots__ = ("_histogram", "_job")

    def __init__(self, histogram: JobHistogram, job: str) -> None:
        self._histogram = histogram
        self._job = job

    def observe(self, value: float) -> None:
        self._histogram.observe(self._job, value)


class _Incrementer:
    """One (job, outcome) side of a :class:`JobCounter`."""

    __slots__ = ("_counter", "_job", "_outcome")

    def __init__(self, counter: JobCounter, job: str, outcome: str) -> None:
        self._counter = counter
        self._job = job
        self._outcome = outcome

    def inc(self) -> None:
        self._counter.inc(self._job, self._outcome)


class JobSeries:
    """The series of one job a run updates.

    Args:
        metrics: the replica's metrics.
        job: the job's name.
    """

    __slots__ = ("_job", "_metrics", "duration", "lateness")

    def __init__(self, metrics: Metrics, job: str) -> None:
        self._metrics = metrics
        self._job = job
        self.lateness = _Observer(metrics.fire_lateness, job)
        self.duration = _Observer(metrics.job_duration, job)

    def runs(self, outcome: str) -> _Incrementer:
        """The ``baton_job_runs{job, outcome}`` series."""
        return _Incrementer(self._metrics.job_runs, self._job, outcome)


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
        self.job_runs = JobCounter(
            "baton_job_runs", "Job runs on this replica by outcome (ok, error, lost).", r
        )
        self.job_duration = JobHistogram(
            "baton_job_duration_seconds", "Wall time of job runs.", _DURATION, r
        )
        self.fire_lateness = JobHistogram(
            "baton_fire_lateness_seconds", "Job start minus scheduled fire instant.", _LATENESS, r
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
