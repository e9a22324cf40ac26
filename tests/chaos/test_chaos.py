"""A short chaos run per backend (CI): every invariant of the checker must hold.

Each run is about two minutes: ~90 s of faults on 5 replicas, then a quiet cool-down and
the checker. The long runs behind CHAOS.md use the same code: ``make chaos``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import checker
from tests.chaos.run import Options, run

pytestmark = [pytest.mark.slow, pytest.mark.chaos, pytest.mark.timeout(420)]

#: Seconds of faults in CI; with start-up, cool-down and shut-down a run takes ~2 minutes.
SHORT = 90.0
SEEDS = {"sqlite": 11, "redis": 12, "zookeeper": 13}
#: Fault families the short CI run keeps apart, per backend (none since F1 was fixed).
KEEP_APART: dict[str, tuple[tuple[str, str], ...]] = {}


@pytest.mark.parametrize("backend", ["sqlite", "redis", "zookeeper"])
def test_short_chaos_run_keeps_every_invariant(backend: str, tmp_path: Path) -> None:
    """~90 s of seeded faults on 5 replicas: no duplicate, overlap, stale write or lost
    update, and missed ticks only inside fault windows."""
    report = run(
        Options(
            backend=backend,
            duration=SHORT,
            seed=SEEDS[backend],
            workdir=tmp_path / "chaos",
            cooldown=6.0,
            keep_apart=KEEP_APART.get(backend, ()),
            apart=50.0,
            command=f"python -m tests.chaos.run --backend {backend} --duration {SHORT:g} "
            f"--seed {SEEDS[backend]}",
        )
    )
    summary = checker.markdown(report)
    assert report["faults_total"] >= 8, summary
    assert report["duplicated"] == 0, summary
    assert report["overlaps"] == 0, summary
    assert report["stale_accepted"] == 0, summary
    assert report["lost_updates"] == 0, summary
    for job, ticks in report["ticks"].items():
        assert ticks["missed_outside_window"] == 0, f"{job}\n{summary}"
        assert ticks["missed_not_caught_up"] == 0, f"{job}\n{summary}"
    assert report["ok"], summary
