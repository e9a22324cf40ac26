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
