"""The Redis HA test harness itself: Sentinel, Cluster and AOF servers on loopback ports.

Issue 15's regression and chaos tests trust these servers to be what they claim (a failover
that moves the primary, a replica that really missed a write, an AOF restart that really
lost the last writes); these tests pin that, each against real processes.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.harness.redis_cluster import RedisClusterGroup
from tests.harness.redis_sentinel import (
    DOWN_AFTER_MS,
    SERVICE,
    SentinelGroup,
    replication_info,
    wait_for,
)
from tests.harness.redis_server import AofServer, RedisServer

#: Seconds to wait for a write to reach a replica that is not cut off.
REPLICATION_WAIT = 5.0


def _key() -> str:
    return f"harness-{uuid.uuid4().hex[:12]}"


def _get(server: RedisServer, key: str) -> str | None:
    with server.client(timeout=1.0) as client:
        value: str | None = client.get(key)
        return value


@pytest.fixture(scope="module")
def sentinel_group() -> Iterator[SentinelGroup]:
    """A Sentinel group of this module's own (these tests fail it over): the session's
    group must never fail over (tests/conftest.py, ``redis_sentinel``)."""
    group = SentinelGroup().start()
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterGroup]:
    """A Redis Cluster of this module's own, in place of the session's (these tests fail
    its shards over, and the session's cluster must never fail over)."""
    group = RedisClusterGroup().start()
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture
def sentinel(sentinel_group: SentinelGroup) -> Iterator[SentinelGroup]:
    """The module's Sentinel group, healed after the test (links resumed, servers back)."""
    try:
        yield sentinel_group
    finally:
        sentinel_group.heal()


def test_sentinel_group_replicates_and_every_sentinel_knows_it(sentinel: SentinelGroup) -> None:
    """The URL names the 3 Sentinels; a write on the primary reaches both replicas."""
    hosts = ",".join(f"127.0.0.1:{port}" for _, port in sentinel.sentinels)
    assert sentinel.url() == f"redis+sentinel://{hosts}/{SERVICE}/0"
    assert sentinel.url(3, min_replicas_ack=1).endswith(f"/{SERVICE}/3?min_replicas_ack=1")
    primary, key = sentinel.primary(), _key()
    assert len(sentinel.replicas()) == 2
    with primary.client() as client:
        client.set(key, "v")
        assert client.wait(2, int(REPLICATION_WAIT * 1000)) == 2
    assert [_get(r, key) for r in sentinel.replicas()] == ["v", "v"]
    for host, port in sentinel.sentinels:
        with redis.Redis(host=host, port=port, decode_responses=True) as client:
            assert client.sentinel_get_master_addr_by_name(SERVICE) == sentinel.address(primary)


def test_failover_moves_the_primary_and_replication_continues(sentinel: SentinelGroup) -> None:
    """After ``SENTINEL FAILOVER`` a former replica is primary, keeps the data, and both
    other servers (the old primary included) replicate its new writes."""
    old, key = sentinel.primary(), _key()
    with old.client() as client:
        client.set(key, "before")
        assert client.wait(2, int(REPLICATION_WAIT * 1000)) == 2
    new = sentinel.failover()
    assert new is not old
    assert sentinel.primary() is new
    assert old in sentinel.replicas()
    assert replication_info(new)["role"] == "master"
    with new.client() as client:
        assert client.get(key) == "before"
        client.set(key, "after")
        assert client.wait(2, int(REPLICATION_WAIT * 1000)) == 2
    assert _get(old, key) == "after"


def test_kill_primary_gets_a_new_primary_and_the_old_one_rejoins(sentinel: SentinelGroup) -> None:
    """kill -9 of the primary: the Sentinels promote a replica; the restarted old primary
    (empty, no persistence) is turned into a replica of the new one."""
    key = _key()
    with sentinel.primary().client() as client:
        client.set(key, "v")
        assert client.wait(2, int(REPLICATION_WAIT * 1000)) == 2
    killed = sentinel.kill_primary()
    assert not killed.running
    new = sentinel.primary()
    assert new is not killed
    assert _get(new, key) == "v"
    sentinel.rejoin(killed)
    assert replication_info(killed)["master_port"] == sentinel.address(new)[1]
    assert _get(killed, key) == "v"


def test_paused_replica_misses_writes_and_gets_them_on_resume(sentinel: SentinelGroup) -> None:
    """A paused link holds the write (the replica still reports its link up); the other
    replica gets it; on resume the held write arrives, in order."""
    primary, key = sentinel.primary(), _key()
    paused, live = sentinel.replicas()
    with sentinel.replication_paused(paused):
        with primary.client() as client:
            client.set(key, "v")
            assert client.wait(1, int(REPLICATION_WAIT * 1000)) == 1
        assert _get(live, key) == "v"
        assert _get(paused, key) is None
        assert replication_info(paused)["master_link_status"] == "up"
    wait_for(lambda: _get(paused, key) == "v", REPLICATION_WAIT, "the held write arriving")


def test_promoting_a_replica_that_missed_a_write_loses_it(sentinel: SentinelGroup) -> None:
    """The issue-15 fault: one replica misses a write the other has; ``promote`` picks the
    lagging one all the same, and every server ends up without the write."""
    old, before, lost = sentinel.primary(), _key(), _key()
    with old.client() as client:
        client.set(before, "kept")
        assert client.wait(2, int(REPLICATION_WAIT * 1000)) == 2
    chosen, other = sentinel.replicas()
    sentinel.pause_replication(chosen)
    with old.client() as client:
        client.set(lost, "v")
        assert client.wait(1, int(REPLICATION_WAIT * 1000)) == 1
    assert _get(other, lost) == "v"
    sentinel.promote(chosen)
    assert sentinel.primary() is chosen
    assert _get(chosen, before) == "kept"
    assert _get(chosen, lost) is None
    sentinel.heal()
    wait_for(
        lambda: [_get(s, before) for s in sentinel.servers] == ["kept"] * 3,
        REPLICATION_WAIT,
        "every server resynced from the promoted replica",
    )
    assert [_get(s, lost) for s in sentinel.servers] == [None, None, None]


def test_sentinel_down_after_is_short(sentinel: SentinelGroup) -> None:
    """The Sentinels run with the short timings the failover tests rely on."""
    for host, port in sentinel.sentinels:
        with redis.Redis(host=host, port=port, decode_responses=True) as client:
            master = client.sentinel_master(SERVICE)
            assert master["down-after-milliseconds"] == DOWN_AFTER_MS
            assert master["quorum"] == 2
            assert master["num-slaves"] == 2
            assert master["num-other-sentinels"] == 2


# --- AOF ---------------------------------------------------------------------------------


@pytest.mark.parametrize("appendfsync", ["everysec", "always"])
def test_aof_kill_keeps_every_answered_write(appendfsync: str) -> None:
    """A kill -9 of the process alone loses nothing: answered writes are in the page cache."""
    server = AofServer(appendfsync=appendfsync).start()  # type: ignore[arg-type]
    try:
        with server.client() as client:
            assert client.config_get("appendfsync") == {"appendfsync": appendfsync}
            client.incr("counter")
            client.set("last", "v")
        server.kill()
        server.start()
        with server.client() as client:
            assert (client.get("counter"), client.get("last")) == ("1", "v")
    finally:
        server.cleanup()


def test_aof_crash_to_snapshot_keeps_earlier_writes_and_loses_later() -> None:
    """``crash_to``: restarted with the AOF of the snapshot, the counter is there at its
    older value and the writes after the snapshot are gone."""
    server = AofServer().start()
    try:
        with server.client() as client:
            client.incr("counter")
            client.set("early", "kept")
            snapshot = server.snapshot()
            client.incr("counter")
            client.set("late", "lost")
        server.crash_to(snapshot)
        with server.client() as client:
            assert client.get("counter") == "1"
            assert client.get("early") == "kept"
            assert client.get("late") is None
            client.incr("counter")  # the restored server takes writes and persists them
        server.kill()
        server.start()
        with server.client() as client:
            assert client.get("counter") == "2"
    finally:
        server.cleanup()


# --- Cluster -----------------------------------------------------------------------------


def test_cluster_answers_and_routes_keys(redis_cluster: RedisClusterGroup) -> None:
    """A cluster client reaches every shard; ``node_for_key`` is the node that serves the
    key (another primary answers MOVED)."""
    assert redis_cluster.url().startswith("redis+cluster://127.0.0.1:")
    assert len(redis_cluster.url().split(",")) == 3
    assert len(redis_cluster.primaries()) == 3
    host, port = redis_cluster.url().removeprefix("redis+cluster://").split(",")[0].split(":")
    keys = [f"{{{_key()}}}:k" for _ in range(20)]
    with redis.RedisCluster(host=host, port=int(port), decode_responses=True) as client:
        for key in keys:
            client.set(key, key)
        assert [client.get(key) for key in keys] == keys
    assert len({redis_cluster.node_for_key(key).port for key in keys}) > 1
    key = keys[0]
    owner = redis_cluster.node_for_key(key)
    assert _get(owner, key) == key
    other = next(n for n in redis_cluster.primaries() if n is not owner)
    with other.client() as client, pytest.raises(redis.exceptions.MovedError):
        client.get(key)


def test_failover_shard_moves_the_primary(redis_cluster: RedisClusterGroup) -> None:
    """``failover_shard``: the key's replica becomes its primary with the data; the old
    primary becomes its replica."""
    key = f"{{{_key()}}}:k"
    old = redis_cluster.node_for_key(key)
    with old.client() as client:
        client.set(key, "v")
        assert client.wait(1, int(REPLICATION_WAIT * 1000)) == 1
    new = redis_cluster.failover_shard(key)
    assert new is not old
    assert redis_cluster.node_for_key(key) is new
    assert redis_cluster.replicas_for_key(key) == [old]
    assert _get(new, key) == "v"


def test_killing_a_shard_primary_promotes_its_replica(redis_cluster: RedisClusterGroup) -> None:
    """kill -9 of a primary: its replica owns the slots once the cluster is ok again; the
    restarted node rejoins as a replica."""
    key = f"{{{_key()}}}:k"
    old = redis_cluster.node_for_key(key)
    with old.client() as client:
        client.set(key, "v")
        assert client.wait(1, int(REPLICATION_WAIT * 1000)) == 1
    redis_cluster.kill(old)
    try:
        new = redis_cluster.node_for_key(key)
        assert new is not old
        assert _get(new, key) == "v"
    finally:
        redis_cluster.restart(old)
    assert redis_cluster.replicas_for_key(key) == [old]
