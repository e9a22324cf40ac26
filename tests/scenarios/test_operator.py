"""Operator commands against real replicas: status, resign, pause, resume."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.harness.replicas import ROOT, Cluster, wait_for
from tests.harness.sink import FencedSink

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(backend_url: str, election: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(backend_url, election, tmp_path / "cluster")
    try:
        yield c
    finally:
        c.close()


def baton(c: Cluster, *args: str) -> dict[str, object]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler",
            *args,
            "--backend",
            c.backend_url,
            "--cluster",
            c.name,
            "--json",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def starts_after(c: Cluster, moment: float) -> list[str]:
    sink = FencedSink(c.sink_path)
    try:
        return [w.tick for w in sink.writes() if w.phase == "start" and w.at > moment]
    finally:
        sink.close()


def test_status_resign_pause_resume(cluster: Cluster) -> None:
    """status lists live replicas; resign hands over; pause stops fires; resume restarts."""
    cluster.start(3, lease_ttl=3)
    first = cluster.wait_leader(timeout=20)
    doc = wait_for(
        lambda: (d := baton(cluster, "status")) and len(d["replicas"]) == 3 and d,  # type: ignore[arg-type]
        20,
        "three live replicas",
        interval=0.2,
    )
    assert doc["leader"] == first.replica_id
    roles = {r["replica_id"]: r["leader"] for r in doc["replicas"]}  # type: ignore[union-attr]
    assert roles == {name: name == first.replica_id for name in ("r1", "r2", "r3")}

    resigned = baton(cluster, "resign", "--wait", "20")
    assert resigned["resigned"] == first.replica_id
    assert resigned["new_leader"] not in (None, first.replica_id)
    assert resigned["new_token"] > first.token  # type: ignore[operator]
    old = cluster.replicas[first.replica_id]
    assert old.alive and [e["reason"] for e in old.events("leadership_lost")] == ["resigned"]

    pause_sent = datetime.now(UTC).timestamp()
    assert baton(cluster, "pause", "test.tick") == {
        "cluster": cluster.name,
        "job": "test.tick",
        "paused": True,
    }
    new_leader = cluster.replicas[str(resigned["new_leader"])]
    wait_for(lambda: new_leader.events("fire_paused"), 20, "a paused fire", interval=0.1)
    paused_at = datetime.now(UTC).timestamp()
    wait_for(lambda: len(new_leader.events("fire_paused")) >= 2, 20, "two paused fires", 0.1)
    assert starts_after(cluster, paused_at) == [], "a paused job ran"
    jobs = json.loads(
        subprocess.run(
            [
                sys.executable,
                "-m",
                "scheduler",
                "jobs",
                "--backend",
                cluster.backend_url,
                "--cluster",
                cluster.name,
                "--jobs",
                "tests.replica_jobs",
                "--json",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "BATON_TEST_SINK": "x"},
        ).stdout
    )
    assert jobs[0]["paused"] is True

    baton(cluster, "resume", "test.tick")
    resumed_at = datetime.now(UTC).timestamp()
    wait_for(lambda: starts_after(cluster, resumed_at), 20, "a run after resume", 0.1)

    # A new leader within misfire_grace (60 s) must not catch up the fires the pause skipped.
    resign_sent = datetime.now(UTC).timestamp()
    handover = baton(cluster, "resign", "--wait", "20")
    moved_at = datetime.now(UTC).timestamp()
    assert handover["new_leader"] not in (None, new_leader.name)
    successor = cluster.replicas[str(handover["new_leader"])]
    # Its catch-up backlog (older fires) runs before any fire due after the handover.
    wait_for(
        lambda: [
            e
            for e in successor.events("job_started")
            if datetime.fromisoformat(e["scheduled_time"]).timestamp() > moved_at
        ],
        20,
        "a fire after the handover run by the next leader",
        0.1,
    )
    skipped = [
        tick
        for tick in starts_after(cluster, resign_sent)
        if pause_sent <= datetime.fromisoformat(tick).timestamp() <= resumed_at
    ]
    assert skipped == [], f"fires skipped by the pause ran after it: {skipped}"
