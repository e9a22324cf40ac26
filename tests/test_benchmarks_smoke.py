"""Smoke test of the benchmark runner: it runs and writes its tables (no timing asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_report(tmp_path: Path, section: str, timeout: float) -> str:
    """Run `benchmarks.run --quick --only SECTION`, check it succeeded, return its report."""
    out = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--only", section, "--write", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return out.read_text()


def test_quick_cycles_writes_report(tmp_path: Path) -> None:
    """`benchmarks.run --quick --only cycles` writes the machine, summary and cycles tables."""
    text = quick_report(tmp_path, "cycles", 120)
    assert "## Machine" in text
    assert "| Measurement | Baton | Reference | Target | Result |" in text
    assert "## 3. Lease acquire+release cycles per second (one client)" in text
    assert "| Contender | cycles/s (median of rounds) | range | Target | Result |" in text
    assert "redis-py Lock acquire + release (reference)" in text


@pytest.mark.slow
def test_quick_postgresql_measures_every_table(tmp_path: Path) -> None:
    """`--quick --only postgresql` measures Baton and tooz on one server: no row unmeasured."""
    text = quick_report(tmp_path, "postgresql", 240)
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
    text = quick_report(tmp_path, "sentinel", 240)
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
    text = quick_report(tmp_path, "celery", 120)
    assert "## 10. Celery beat: Baton vs RedBeat under faults" in text
    assert "not measured" not in text
    assert "| cut from Redis | Baton BatonScheduler | 1 | 0 |" in text
    assert "| cut from Redis | celery-redbeat RedBeatScheduler (reference) | 1 |" in text
    assert "| Celery beat duplicate executions (kill -9, SIGSTOP, cut) | 0 |" in text


@pytest.mark.slow
def test_quick_etcd_measures_every_table(tmp_path: Path) -> None:
    """`--quick --only etcd` measures Baton, tooz (etcd3gw) and etcdctl elect on one etcd:
    no row unmeasured."""
    text = quick_report(tmp_path, "etcd", 240)
    assert "## 11. etcd backend vs tooz (etcd3gw) and etcdctl elect" in text
    assert "not measured" not in text
    for row in (
        "| Baton, etcd backend |",
        "| tooz lock, etcd3gw driver (Python reference) |",
        "| etcdctl elect (Go reference) |",
        "| Baton EtcdBackend.claim (one fire; one read + one txn) |",
        "| tooz lock acquire(blocking=False) + release (reference) |",
    ):
        assert text.count(row) >= 1, row
    assert "| etcd graceful handover p50 |" in text
