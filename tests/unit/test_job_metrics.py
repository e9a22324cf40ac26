"""Per-job metrics are kept compactly but exposed exactly as prometheus_client would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from scheduler.ops.metrics import _DURATION, _LATENESS, Metrics


def lines(text: bytes, *names: str) -> set[str]:
    return {
        line
        for line in text.decode().splitlines()
        if any(name in line for name in names) and "_created" not in line
    }


def test_per_job_series_match_prometheus_client_exposition() -> None:
    ours = Metrics()
    ref = CollectorRegistry()
    lateness = Histogram(
        "baton_fire_lateness_seconds",
        "Job start minus scheduled fire instant.",
        ["job"],
        buckets=_LATENESS,
        registry=ref,
    )
    duration = Histogram(
        "baton_job_duration_seconds",
        "Wall time of job runs.",
        ["job"],
        buckets=_DURATION,
        registry=ref,
    )
    runs = Counter(
        "baton_job_runs",
        "Job runs on this replica by outcome (ok, error, lost).",
        ["job", "outcome"],
        registry=ref,
    )
    # Values on bucket bounds, between them, past the last one, and zero.
    samples = [0.0, 0.001, 0.0011, 0.05, 0.7, 60.0, 61.0, 5000.0]
    for job in ("a", "b.c", 'q"uote'):
        series = ours.job_series(job)
        for value in samples:
            series.lateness.observe(value)
            lateness.labels(job).observe(value)
            series.duration.observe(value)
            duration.labels(job).observe(value)
        for outcome in ("ok", "ok", "error"):
            series.runs(outcome).inc()
            runs.labels(job, outcome).inc()
    names = ("baton_fire_lateness", "baton_job_duration", "baton_job_runs")
    assert lines(ours.render(), *names) == lines(generate_latest(ref), *names)
    value = ours.registry.get_sample_value("baton_job_runs_total", {"job": "a", "outcome": "ok"})
    assert value == 2.0
