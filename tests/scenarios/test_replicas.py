"""Real replica processes on real backends: one leader, every tick once, fast failover."""

from __future__ import annotations

import itertools
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from scheduler.backends.runs import RunRecord
from tests.harness.replicas import Cluster, wait_for
from tests.harness.sink import FencedSink, Write

pytestmark = pytest.mark.slow

INTERVAL = timedelta(seconds=2)


@pytest.fixture
def cluster(backend_url: str, election: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(backend_url, election, tmp_path / "cluster")
    try:
        yield c
    finally:
        c.close()


def starts(sink_path: Path) -> list[Write]:
    sink = FencedSink(sink_path)
    try:
        return [w for w in sink.writes() if w.phase == "start"]
    finally:
        sink.close()


def distinct_ticks(sink_path: Path) -> int:
    return len({w.tick for w in starts(sink_path)})


def assert_every_tick_once(writes: list[Write]) -> list[datetime]:
    """Every tick from the first to the last started exactly once; returns the ticks."""
    counts = Counter(w.tick for w in writes)
    duplicated = {t: c for t, c in counts.items() if c > 1}
    assert not duplicated, f"ticks run more than once: {duplicated}"
    ticks = sorted(datetime.fromisoformat(t) for t in counts)
    expected, tick = [], ticks[0]
    while tick <= ticks[-1]:
        expected.append(tick)
        tick += INTERVAL
    missing = [t.isoformat() for t in expected if t not in set(ticks)]
    assert not missing, f"ticks never run: {missing}"
    return ticks


def leadership_intervals(c: Cluster) -> list[tuple[str, float, float]]:
    """(replica, acquired, lost-or-now) from each replica's own log events."""
    out = []
    for replica in c:
        start = None
        for event in replica.events():
            stamp = datetime.fromisoformat(event["timestamp"]).timestamp()
            if event["event"] == "leadership_acquired":
                start = stamp
            elif event["event"] == "leadership_lost" and start is not None:
                out.append((replica.name, start, stamp))
                start = None
        if start is not None:
            out.append((replica.name, start, time.time()))
    return out


def test_three_replicas_one_leader_every_tick_once(cluster: Cluster) -> None:
    """3 replicas, a 2 s job for 30 s: one leader at a time, each tick claimed and run once."""
    cluster.start(3, lease_ttl=3)
    cluster.wait_leader(timeout=15)
    wait_for(lambda: distinct_ticks(cluster.sink_path) >= 15, 60, "15 ticks", interval=0.2)
    cluster.stop()

    writes = starts(cluster.sink_path)
    ticks = assert_every_tick_once(writes)
    assert all(w.accepted for w in writes)
    intervals = sorted(leadership_intervals(cluster), key=lambda i: i[1])
    for (name_a, _, end_a), (name_b, start_b, _) in itertools.pairwise(intervals):
        assert name_a == name_b or start_b >= end_a, f"two leaders at once: {intervals}"
    # The claim records are the history: one per tick, naming the replica that ran it.
    history = cluster.observer_history("test.tick", 100)
    by_tick = {r.scheduled_time: (r.replica_id, r.token, r.outcome) for r in history}
    for w in writes:
        assert by_tick[datetime.fromisoformat(w.tick)] == (w.replica, w.token, "ok")
    assert len(ticks) >= 15


def test_kill9_leader_fails_over_and_catches_up(cluster: Cluster) -> None:
    """kill -9 the leader: a new leader within ttl + renew_interval, missed ticks run once."""
    # With ttl 4 s (renewed every 1.33 s) the leaderless window is at least 2.67 s, so at
    # least one tick of the 2 s job always falls due while nobody leads.
    ttl, renew_interval = 4.0, 4.0 / 3
    cluster.start(3, lease_ttl=ttl)
    first = cluster.wait_leader(timeout=15)
    wait_for(lambda: distinct_ticks(cluster.sink_path) >= 2, 15, "2 ticks")

    cluster.replicas[first.replica_id].signal(signal.SIGKILL)
    killed = time.monotonic()
    second = cluster.wait_leader(timeout=ttl + renew_interval + 5, not_token=first.token)
    failover = time.monotonic() - killed
    assert failover <= ttl + renew_interval + 1.0, f"failover took {failover:.2f} s"
    assert second.token > first.token

    took_over = datetime.now().astimezone()
    wait_for(
        lambda: any(
            datetime.fromisoformat(w.tick) > took_over + 2 * INTERVAL
            for w in starts(cluster.sink_path)
        ),
        20,
        "two ticks after the failover",
        interval=0.1,
    )
    writes = starts(cluster.sink_path)
    assert_every_tick_once(writes)
    acquired = cluster.replicas[second.replica_id].events("leadership_acquired")[0]
    took_over_at = datetime.fromisoformat(acquired["timestamp"]).timestamp()
    caught_up = [
        w for w in writes if w.replica == second.replica_id and _instant(w.tick) < took_over_at
    ]
    assert caught_up, "the new leader ran no tick that fell due before it took over"


def test_sigterm_leader_hands_over_at_once(cluster: Cluster) -> None:
    """SIGTERM the leader: it releases and a follower leads in well under a second."""
    cluster.start(2, lease_ttl=10)
    first = cluster.wait_leader(timeout=15)
    # The follower must be waiting for the lease (not still starting up) for this to count.
    follower = next(r for r in cluster if r.name != first.replica_id)
    wait_for(lambda: follower.events("replica_started"), 15, "the follower to start")
    wait_for(lambda: distinct_ticks(cluster.sink_path) >= 1, 15, "a tick")

    leader = cluster.replicas[first.replica_id]
    leader.signal(signal.SIGTERM)
    sent = time.monotonic()
    second = cluster.wait_leader(timeout=5, not_token=first.token)
    handover = time.monotonic() - sent
    assert second.replica_id == follower.name
    assert handover < 1.0, f"handover took {handover:.3f} s"
    assert leader.proc.wait(timeout=15) == 0
    assert leader.events("lease_released")


def test_paused_leader_is_fenced_out(cluster: Cluster) -> None:
    """SIGSTOP the leader past its TTL: after SIGCONT it fires nothing, check() raises, and
    its write with the old token is refused by the fenced sink."""
    cluster.start(2, lease_ttl=2, **{"test_work": 1.5})
    first = cluster.wait_leader(timeout=15)
    paused = cluster.replicas[first.replica_id]

    def all_writes() -> list[Write]:
        sink = FencedSink(cluster.sink_path)
        try:
            return sink.writes()
        finally:
            sink.close()

    def running_job() -> Write | None:
        ws = all_writes()
        ended = {(w.tick, w.token) for w in ws if w.phase == "end"}
        for w in ws:
            if w.phase == "start" and w.replica == paused.name and (w.tick, w.token) not in ended:
                return w
        return None

    in_flight = wait_for(running_job, 20, "the leader's job to be running")
    paused.signal(signal.SIGSTOP)
    second = cluster.wait_leader(timeout=10, not_token=first.token)
    assert second.replica_id != paused.name and second.token > first.token
    wait_for(
        lambda: any(
            w.replica == second.replica_id and w.accepted for w in starts(cluster.sink_path)
        ),
        15,
        "a write by the new leader",
    )
    paused.signal(signal.SIGCONT)
    resumed = time.time()

    def end_write() -> Write | None:
        for w in all_writes():
            if w.phase == "end" and w.tick == in_flight.tick and w.replica == paused.name:
                return w
        return None

    end = wait_for(end_write, 15, "the paused job's end write")
    assert not end.accepted, "a write with the deposed leader's token was accepted"
    assert end.note == "check-raised", "ctx.check() did not raise after the pause"
    # Let two more ticks pass on the new leader, then: nothing ran under the old token.
    wait_for(
        lambda: (
            sum(
                1
                for w in starts(cluster.sink_path)
                if w.replica == second.replica_id and w.at > resumed
            )
            >= 2
        ),
        15,
        "two ticks after the resume",
    )
    late = [w for w in starts(cluster.sink_path) if w.token == first.token and w.at > resumed]
    assert not late, f"the paused leader fired after it resumed: {late}"
    assert paused.events("leadership_lost")


def _instant(tick: str) -> float:
    return datetime.fromisoformat(tick).timestamp()


def test_run_of_a_killed_leader_is_recorded_lost_not_rerun(cluster: Cluster) -> None:
    """kill -9 mid-run: the new leader marks that run lost in the history; no re-run."""
    cluster.start(2, lease_ttl=3, **{"test_work": 1.5})
    first = cluster.wait_leader(timeout=15)
    victim = cluster.replicas[first.replica_id]
    started = wait_for(
        lambda: [w for w in starts(cluster.sink_path) if w.replica == victim.name],
        20,
        "a run by the leader",
    )
    victim.signal(signal.SIGKILL)
    killed_tick = datetime.fromisoformat(started[-1].tick)
    second = cluster.wait_leader(timeout=10, not_token=first.token)

    def record() -> RunRecord | None:
        for run in cluster.observer_history("test.tick", 50):
            if run.scheduled_time == killed_tick and run.outcome == "lost":
                return run
        return None

    lost = wait_for(record, 15, "the killed run recorded as lost", interval=0.05)
    assert lost.replica_id == victim.name and lost.token == first.token
    assert "stopped before the run ended" in lost.message
    assert [w.tick for w in starts(cluster.sink_path)].count(started[-1].tick) == 1
    assert second.replica_id != victim.name
