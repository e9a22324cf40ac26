"""Smoke test of the benchmark runner: it runs and writes its tables (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quick_cycles_writes_report(tmp_path: Path) -> None:
    """`benchmarks.run --quick --only cycles` writes the machine, summary and cycles tables."""
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--only",
            "cycles",
            "--write",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "## Machine" in text
    assert "| Measurement | Baton | Reference | Target | Result |" in text
    assert "## 3. Lease acquire+release cycles per second (one client)" in text
    assert "| Contender | cycles/s (median of rounds) | range | Target | Result |" in text
    assert "redis-py Lock acquire + release (reference)" in text


@pytest.mark.slow
def test_quick_postgresql_measures_every_table(tmp_path: Path) -> None:
    """`--quick --only postgresql` measures Baton and tooz on one server: no row unmeasured."""
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--only",
            "postgresql",
            "--write",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "## 8. PostgreSQL backend vs tooz" in text
    assert "not measured" not in text
    for row in (
        "| Baton, PostgreSQL backend |",
        "| tooz PostgreSQL driver lock (reference) |",
        "| Baton PostgresBackend.claim (one fire) |",
        "| Baton PostgresBackend.claim_many (1,000 fires, per batch) |",
        "| tooz lock acquire(blocking=False) + release (reference) |",
        "| Baton leader (PostgreSQL backend, 2 replicas) |",
    ):
        assert text.count(row) >= 1, row
    assert "| PostgreSQL graceful handover p50 |" in text


@pytest.mark.slow
def test_quick_sentinel_measures_every_table(tmp_path: Path) -> None:
    """`--quick --only sentinel` measures claims, cycles and both faults on one Sentinel
    group: every min_replicas_ack row next to redis-py Lock, no row unmeasured."""
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--only",
            "sentinel",
            "--write",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "## 9. Redis Sentinel: replication acknowledgements and primary failover" in text
    assert "not measured" not in text
    for row in (
        "| Baton, Sentinel, min_replicas_ack=0: claim (one fire) |",
        "| Baton, Sentinel, min_replicas_ack=1: claim (one fire) |",
        "| Baton, Sentinel, min_replicas_ack=auto (2): claim_many (1,000 fires, per batch) |",
        "| Baton, Sentinel, min_replicas_ack=1: try_acquire + release |",
        "| redis-py Lock acquire + release, same primary (reference) |",
        "| SENTINEL FAILOVER | 1 |",
        "| kill -9 of the primary | auto |",
    ):
        assert text.count(row) >= 1, row
    assert "| Redis Sentinel claim latency p99, min_replicas_ack=1 |" in text


@pytest.mark.slow
def test_quick_celery_compares_baton_and_redbeat(tmp_path: Path) -> None:
    """`--quick --only celery` cuts a Baton and a RedBeat leader beat from Redis and reports
    both from the task ledger, with Baton's zero duplicates."""
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--quick",
            "--only",
            "celery",
            "--write",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    assert "## 10. Celery beat: Baton vs RedBeat under faults" in text
    assert "not measured" not in text
    assert "| cut from Redis | Baton BatonScheduler | 1 | 0 |" in text
    assert "| cut from Redis | celery-redbeat RedBeatScheduler (reference) | 1 |" in text
    assert "| Celery beat duplicate executions (kill -9, SIGSTOP, cut) | 0 |" in text
