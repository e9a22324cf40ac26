"""The backend goes away under a leader: it steps down by renew_deadline, never leads while
the backend is gone, and exactly one replica leads again once it is back."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.harness.redis_server import RedisServer
from tests.harness.replicas import Cluster, wait_for
from tests.harness.sink import FencedSink

#: The per-fire lines (job_started, fire_paused, ...) this test reads are at debug level.
PER_FIRE_LINES = {"BATON_LOG_LEVEL": "debug"}

pytestmark = pytest.mark.slow


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, since the test stops and restarts it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


def test_leader_steps_down_during_outage_and_one_leads_after(
    own_redis: RedisServer, election: str, tmp_path: Path
) -> None:
    """Redis stopped: the leader gives up by renew_deadline; restarted: one leader again."""
    ttl = 3.0
    renew_deadline = 2 * ttl / 3
    cluster = Cluster(own_redis.url, election, tmp_path / "cluster", env=PER_FIRE_LINES)
    try:
        cluster.start(2, lease_ttl=ttl)
        first = cluster.wait_leader(timeout=15)
        leader = cluster.replicas[first.replica_id]
        wait_for(lambda: leader.events("job_started"), 15, "a job run by the leader")

        own_redis.stop()
        stopped_at = time.time()
        lost = wait_for(lambda: leader.events("leadership_lost"), renew_deadline + 5, "step-down")
        gave_up_after = datetime.fromisoformat(lost[0]["timestamp"]).timestamp() - stopped_at
        # Its last successful renewal was at most renew_interval before the stop.
        assert gave_up_after <= renew_deadline + 0.25, f"gave up {gave_up_after:.2f} s after"
        assert lost[0]["reason"] == "renew_deadline"
        for replica in cluster:
            wait_for(
                lambda r=replica: r.events("backend_unavailable"), 15, f"{replica.name} retrying"
            )

        own_redis.restart()
        restarted_at = time.time()
        second = cluster.wait_leader(timeout=15)
        assert second.token > first.token, "the fencing token went back after a data-losing restart"

        def leaders_by_log() -> list[str]:
            current = []
            for replica in cluster:
                changes = [
                    e["event"]
                    for e in replica.events()
                    if e["event"] in ("leadership_acquired", "leadership_lost")
                ]
                if changes and changes[-1] == "leadership_acquired":
                    current.append(replica.name)
            return current

        assert wait_for(
            lambda: leaders_by_log() == [second.replica_id] and leaders_by_log(),
            10,
            "exactly one leader by the replicas' own accounts",
        )
        new_leader = cluster.replicas[second.replica_id]
        wait_for(
            lambda: [
                e
                for e in new_leader.events("job_started")
                if datetime.fromisoformat(e["timestamp"]).timestamp() > restarted_at
            ],
            15,
            "a job after the restart",
        )
    finally:
        cluster.close()

    sink = FencedSink(cluster.sink_path)
    writes = sink.writes()
    sink.close()
    outage = [w for w in writes if w.phase == "start" and stopped_at + 0.1 < w.at < restarted_at]
    assert not outage, f"jobs started while the backend was down: {outage}"
    ticks = [w.tick for w in writes if w.phase == "start"]
    assert len(ticks) == len(set(ticks)), "a tick ran twice"
