"""Hard abort on real replica processes: hooks, process isolation, exit_on_lost, stalls."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.harness.redis_server import RedisServer
from tests.harness.replicas import Cluster, steal_lease, wait_for
from tests.harness.sink import Write, read_writes
from tests.unit.test_isolation import alive

#: The per-fire lines (job_started, fire_paused, ...) this test reads are at debug level.
PER_FIRE_LINES = {"BATON_LOG_LEVEL": "debug"}

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(redis_server: RedisServer, election: str, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(redis_server.url, election, tmp_path / "cluster", env=PER_FIRE_LINES) as c:
        yield c


def writes(c: Cluster) -> list[Write]:
    return read_writes(c.sink_path)


def test_lost_leader_runs_hooks_kills_its_job_process_and_exits(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """Lease deleted under a leader with exit_on_lost: hooks run (a failing one is logged),
    the job process that ignores SIGTERM is killed, the run is recorded lost, exit status 3."""
    cluster.start(1, lease_ttl=2, jobs="tests.jobs.abort", exit_on_lost="true")
    leader = cluster.replicas["r1"]
    first = cluster.wait_leader(timeout=15)
    start = cluster.wait_started("abort.stubborn", "the job process to start")
    assert alive(start.pid)

    steal_lease(redis_server, cluster.name)

    assert leader.proc.wait(timeout=15) == 3
    assert not alive(start.pid), "the job process outlived its replica"
    phases = {(w.phase, w.token) for w in writes(cluster) if w.resource == "hooks"}
    assert {
        ("acquired", first.token),
        ("lost", first.token),
        ("job_on_lost", first.token),
    } <= phases
    assert leader.events("hook_failed") and leader.events("exiting_on_lost")
    run = next(r for r in cluster.observer_history("abort.stubborn", 10) if r.token == first.token)
    assert run.outcome == "lost"


def test_paused_replica_cannot_keep_its_job_process_past_the_lease(cluster: Cluster) -> None:
    """SIGSTOP the replica: its job process ends itself before another replica leads."""
    cluster.start(2, lease_ttl=2, jobs="tests.jobs.abort")
    first = cluster.wait_leader(timeout=15)
    start = cluster.wait_started("abort.stubborn", "the job process to start")
    paused = cluster.replicas[first.replica_id]
    paused.signal(signal.SIGSTOP)
    try:
        died = wait_for(lambda: not alive(start.pid) and time.time(), 10, "the orphaned job to end")
        second = cluster.wait_leader(timeout=10, not_token=first.token)
        # The lease can be seen taken a moment before the new leader's log line is written.
        acquired = wait_for(
            lambda: cluster.replicas[second.replica_id].events("leadership_acquired"),
            5,
            "the new leader's leadership_acquired line",
        )[0]
        took_over = datetime.fromisoformat(acquired["timestamp"]).timestamp()
        assert died < took_over, f"job process alive {died - took_over:.3f} s into the new term"
    finally:
        paused.signal(signal.SIGCONT)


def test_short_stall_is_revalidated_without_losing_leadership(cluster: Cluster) -> None:
    """A 1.5 s pause (under renew_deadline): stall detected, lease re-validated, same term."""
    cluster.start(1, lease_ttl=10)
    first = cluster.wait_leader(timeout=15)
    leader = cluster.replicas[first.replica_id]
    wait_for(lambda: leader.events("job_started"), 15, "a job run")
    leader.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    wait_for(lambda: time.monotonic() - stopped > 1.5, 5, "1.5 s of pause")
    leader.signal(signal.SIGCONT)
    stall = wait_for(lambda: leader.events("stall_detected"), 10, "the stall to be detected")
    assert stall[0]["seconds"] >= 1.4
    wait_for(lambda: leader.events("lease_revalidated"), 10, "the lease re-validated")
    assert not leader.events("leadership_lost")
    assert cluster.leader() is not None and cluster.leader().token == first.token  # type: ignore[union-attr]
