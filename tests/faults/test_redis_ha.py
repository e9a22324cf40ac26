"""Redis as production runs it: a failover to a replica that missed the last writes, a
restart from an older AOF, replication acknowledgements, a Sentinel failover and a Cluster
shard failover under a leader. Every server is real (tests/harness/redis_sentinel.py,
redis_cluster.py, redis_server.AofServer).

The first two fail on the Redis backend before issue 15: nothing noticed that the server
had changed, so the fire claimed (and started) on the lost primary was claimed again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.backends.base import Backend
from scheduler.backends.runs import Retention, RunRecord
from scheduler.errors import BackendUnavailable, LeaseLost
from tests.contract.support import acquire, holder, now_ms, run_for, wait_until
from tests.harness.redis_cluster import RedisClusterGroup
from tests.harness.redis_sentinel import SentinelGroup
from tests.harness.redis_server import AofServer

OP_TIMEOUT = 1.0
RETENTION = Retention(limit=100)
#: Seconds a failover may take in the harness (Sentinel's down-after is 1 s there).
FAILOVER_WAIT = 30.0


@pytest.fixture
def sentinel() -> Iterator[SentinelGroup]:
    """A Sentinel group of the test's own (under a second to start): a promoted replica
    makes every election name new to it refuse past fires (the claim epoch), which the
    session's group, shared with the contract suite, must not inherit."""
    group = SentinelGroup().start()
    try:
        yield group
    finally:
        group.cleanup()


def past_fresh_epoch() -> datetime:
    """A fire instant past the epoch a fresh election name gets at its first acquisition
    (fires up to 1 s ahead of it are refused: README, Redis), once it may be claimed."""
    fire = now_ms(1.2)
    assert wait_until(lambda: fire <= now_ms(0.9), 5)
    return fire


def _answers(call: Callable[[], object]) -> bool:
    try:
        call()
    except BackendUnavailable:
        return False
    return True


def test_a_promoted_replica_that_missed_the_last_claim_does_not_run_it_again(
    sentinel: SentinelGroup, opened: Callable[..., Backend], election: str
) -> None:
    """Without acknowledgements (min_replicas_ack=0), a replica that missed the leader's
    last claim and start is promoted: the next leader's token exceeds the old one and the
    fire that ran on the lost primary is refused (the claim epoch), not run again."""
    url = sentinel.url(min_replicas_ack="0")
    old = opened(url)
    lease = acquire(old, election, holder("r1"), ttl=1.0)
    lagging, _ = sentinel.replicas()
    sentinel.pause_replication(lagging)
    fire = past_fresh_epoch()
    run = run_for(lease, fire)
    assert old.claim(lease, run, RETENTION) == run
    old.start(lease, run.started_now(datetime.now(UTC)))  # the job ran on the old primary
    sentinel.promote(lagging)  # it never saw the claim, nor the start

    new = opened(url)
    assert wait_until(lambda: _answers(lambda: new.read(election)), FAILOVER_WAIT)
    assert wait_until(lambda: new.read(election) is None, 5)
    successor = acquire(new, election, holder("r2"))
    assert successor.token > lease.token
    assert new.lookup(election, "job", fire) is None, "the promoted replica lacks the claim"
    assert new.claim(successor, run_for(successor, fire), RETENTION) is None
    later = now_ms(1.3)
    assert wait_until(lambda: later <= now_ms(0.9), 5)
    assert new.claim(successor, run_for(successor, later), RETENTION) is not None


def test_a_claim_not_acknowledged_by_the_replicas_fails_and_is_not_lost_by_a_failover(
    sentinel: SentinelGroup, opened: Callable[..., Backend], election: str
) -> None:
    """With acknowledgements (auto: both replicas), a claim the lagging replica did not
    acknowledge fails (in doubt: the job does not run); after that replica is promoted the
    fire is free, and the next leader runs it, once."""
    url = sentinel.url()
    old = opened(url)
    lease = acquire(old, election, holder("r1"), ttl=1.0)
    lagging, _ = sentinel.replicas()
    sentinel.pause_replication(lagging)
    fire = past_fresh_epoch()
    with pytest.raises(BackendUnavailable, match="acknowledged by 1 of the 2 replicas"):
        old.claim(lease, run_for(lease, fire), RETENTION)
    sentinel.promote(lagging)

    new = opened(url)
    assert wait_until(lambda: _answers(lambda: new.read(election)), FAILOVER_WAIT)
    assert wait_until(lambda: new.read(election) is None, 5)
    successor = acquire(new, election, holder("r2"))
    assert successor.token > lease.token
    # Never confirmed to a job, so the old leader did not run it; the epoch refuses it now
    # (it may have landed): skipped, never run twice.
    assert new.claim(successor, run_for(successor, fire), RETENTION) is None


def test_a_leader_follows_a_sentinel_failover_without_a_restart(
    sentinel: SentinelGroup, opened: Callable[..., Backend], election: str
) -> None:
    """The same backend object reaches the new primary after SENTINEL FAILOVER; the
    acknowledged lease and claim survived the failover."""
    backend = opened(sentinel.url())
    # Longer than a failover the harness may have to ask for twice (an aborted election).
    lease = acquire(backend, election, holder("r1"), ttl=FAILOVER_WAIT)
    fire = past_fresh_epoch()
    run = run_for(lease, fire)
    assert backend.claim(lease, run, RETENTION) == run
    sentinel.failover()
    assert wait_until(lambda: _answers(lambda: backend.renew(lease)), FAILOVER_WAIT)
    # An acknowledged lookup waits for both replicas; the old primary, now a replica,
    # resynchronises first (until then: not acknowledged, as a claim would be in doubt).
    found: list[RunRecord | None] = []
    assert wait_until(
        lambda: _answers(lambda: found.append(backend.lookup(election, "job", fire))), FAILOVER_WAIT
    )
    stored = found[-1]
    assert stored is not None and stored.attempt == run.attempt


def test_a_restart_from_an_older_aof_is_detected(
    opened: Callable[..., Backend], election: str
) -> None:
    """AOF everysec, the server restarted from a state a little older than its last writes
    (a crash before fsync): the counter is there, the last claim is not; the next
    acquisition notices the restart and refuses that fire instead of running it again."""
    server = AofServer(appendfsync="everysec").start()
    try:
        url = f"redis://127.0.0.1:{server.port}/0"
        old = opened(url)
        first = acquire(old, election, holder("r1"), ttl=1.0)
        snapshot = server.snapshot()
        fire = past_fresh_epoch()
        run = run_for(first, fire)
        assert old.claim(first, run, RETENTION) == run
        old.start(first, run.started_now(datetime.now(UTC)))
        server.crash_to(snapshot)

        new = opened(url)
        assert wait_until(lambda: new.read(election) is None, 5)
        successor = acquire(new, election, holder("r2"))
        assert successor.token > first.token
        assert new.lookup(election, "job", fire) is None, "the claim was lost"
        assert new.claim(successor, run_for(successor, fire), RETENTION) is None
    finally:
        server.cleanup()


@pytest.fixture
def cluster() -> Iterator[RedisClusterGroup]:
    """A Redis Cluster of the test's own (about 3 s to create): a shard failover makes every
    election name new to the promoted primary refuse past fires (the claim epoch), which the
    session's cluster, shared with the contract suite, must not inherit."""
    group = RedisClusterGroup().start()
    try:
        yield group
    finally:
        group.cleanup()


def test_a_cluster_shard_failover_under_a_leader(
    cluster: RedisClusterGroup, opened: Callable[..., Backend], election: str
) -> None:
    """Every key of the election is in one slot; after its shard fails over, the same
    backend object reaches the new owner (MOVED followed), the lease renews or is lost
    cleanly, and the acknowledged claim is there."""
    backend = opened(cluster.url())
    lease = acquire(backend, election, holder("r1"), ttl=10.0)
    fire = past_fresh_epoch()
    run = run_for(lease, fire)
    assert backend.claim(lease, run, RETENTION) == run
    cluster.failover_shard(f"baton:{{{election}}}:lease")

    def renews() -> bool:
        try:
            backend.renew(lease)
        except (BackendUnavailable, LeaseLost):
            return False
        return True

    assert wait_until(renews, FAILOVER_WAIT)
    stored = backend.lookup(election, "job", fire)
    assert stored is not None and stored.attempt == run.attempt


def test_automatic_acknowledgements_stop_waiting_for_a_replica_that_died(
    sentinel: SentinelGroup, opened: Callable[..., Backend], election: str
) -> None:
    """min_replicas_ack=auto counts the replicas again at each renewal: after one of the
    two replicas is killed, the leader's claims go on once it has renewed (before: every
    claim failed until the dead replica came back, seen in the Sentinel benchmark)."""
    backend = opened(sentinel.url())
    lease = acquire(backend, election, holder("r1"), ttl=10.0)
    first = run_for(lease, past_fresh_epoch())
    assert backend.claim(lease, first, RETENTION) == first
    dead, _ = sentinel.replicas()
    dead.kill()

    def one_replica_left() -> bool:
        with sentinel.primary().client() as client:
            return int(client.info("replication")["connected_slaves"]) == 1

    assert wait_until(one_replica_left, 10)
    lease = backend.renew(lease)
    instant = first.scheduled_time + timedelta(seconds=1)  # past the fresh name's epoch
    assert wait_until(lambda: instant <= now_ms(0.9), 5)
    later = run_for(lease, instant)
    assert backend.claim(lease, later, RETENTION) == later
