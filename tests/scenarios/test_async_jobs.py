"""``async def`` jobs on real ``baton run`` processes: leadership loss cancels the task
(CancelledError at its await, ``finally`` runs), the run is recorded ``lost``, and the
replica goes on; ctx.wait_lost() wakes on the loss."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.redis_server import RedisServer
from tests.harness.replicas import Cluster, steal_lease, wait_for
from tests.harness.sink import Write, read_writes

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(redis_server: RedisServer, election: str, tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(redis_server.url, election, tmp_path / "cluster") as c:
        yield c


def writes(c: Cluster) -> list[Write]:
    return [w for w in read_writes(c.sink_path) if w.resource == "async"]


def test_leadership_loss_cancels_async_job_and_its_finally_runs(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """The lease stolen under a leader: its running async jobs get CancelledError (their
    finally blocks run), wait_lost() wakes, the runs are recorded lost, the replica lives."""
    # A short shutdown_grace: at teardown the hour-long job runs again (not a graceful end).
    cluster.start(1, lease_ttl=3, shutdown_grace=2, jobs="tests.jobs.async_abort")
    leader = cluster.replicas["r1"]
    first = cluster.wait_leader(timeout=15)
    start = cluster.wait_started("async.long", "the async job to start")
    wait_for(lambda: [w for w in writes(cluster) if w.phase == "waiting"], 20, "the waiter to wait")

    steal_lease(redis_server, cluster.name)

    def phases() -> list[str]:
        return [w.phase for w in writes(cluster) if w.token == first.token]

    wait_for(lambda: "finally" in phases(), 20, "the cancelled job's finally block")
    wait_for(lambda: "wait_lost=True" in phases(), 20, "wait_lost() to wake on the loss")
    long_phases = [
        w.phase for w in writes(cluster) if w.job == "async.long" and w.tick == start.tick
    ]
    assert long_phases == ["start", "cancelled", "finally"], long_phases

    def recorded() -> str | None:
        for run in cluster.observer_history("async.long", 20):
            if run.scheduled_time.isoformat() == start.tick and run.outcome == "lost":
                return run.message
        return None

    # Lost either way: by the cancelled run's own outcome ("leadership lost ...") or, when
    # the replica leads again first, by the new term's takeover of the orphaned run.
    wait_for(recorded, 20, "the cancelled run recorded lost")
    assert leader.alive, cluster.dump_logs()
    assert not leader.events("job_failed"), "a cancelled async job is lost, not failed"
