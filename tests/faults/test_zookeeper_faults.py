"""ZooKeeper-specific faults on a real server: crashes, expiry, restarts, ACLs, the latch.

Tests that kill or restart the server get their own (``own_zk``); the others share the
session server of the contract suite and keep apart by election name (and chroot).
Multi-process tests run real ``baton run`` replicas through the ``Cluster`` harness; their
timings come from ``BATON_*`` variables, the ZooKeeper ones as ``BATON_ZOOKEEPER_<KEY>``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError

from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.states import LossReason
from scheduler.backends.zookeeper import ZooKeeperBackend, ZooKeeperSettings
from scheduler.errors import BackendAuthError, BackendUnavailable, LeaseLost
from scheduler.leadership.lease import Holder, Lease, LeaseRecord
from tests.contract.support import wait_until
from tests.harness.redis_server import make_tls_files
from tests.harness.replicas import Cluster, wait_for
from tests.harness.sink import FencedSink, Write
from tests.harness.zookeeper_server import ZooKeeperServer

pytestmark = pytest.mark.slow

OP_TIMEOUT = 0.5
USER, PASSWORD = "baton", "correct-horse-battery"
#: Lease TTL (and so session timeout) of the multi-process tests: failover after a crash.
TTL = 2.0


@pytest.fixture
def own_zk() -> Iterator[ZooKeeperServer]:
    """A ZooKeeper server for this test alone, free to be killed and restarted."""
    server = ZooKeeperServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def open_backend() -> Iterator[Callable[..., ZooKeeperBackend]]:
    """Open ZooKeeper backends with a short op_timeout; all closed at teardown."""
    opened: list[ZooKeeperBackend] = []

    def make(url: str, **options: Any) -> ZooKeeperBackend:
        backend = ZooKeeperBackend.from_url(
            url, op_timeout=OP_TIMEOUT, options=ZooKeeperSettings(**options)
        )
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


@pytest.fixture
def admin(zookeeper_server: ZooKeeperServer) -> Iterator[KazooClient]:
    """A kazoo client with the test credentials, to inspect and break things behind Baton."""
    client = zookeeper_server.client(auth=(USER, PASSWORD))
    try:
        yield client
    finally:
        client.stop()
        client.close()


def acquire(backend: ZooKeeperBackend, name: str, replica: str = "r1", ttl: float = 5.0) -> Lease:
    lease = backend.try_acquire(name, Holder.new(replica, host="test"), ttl)
    assert lease is not None
    return lease


def run_for(lease: Lease, second: int = 0) -> RunRecord:
    return RunRecord(
        job="job",
        scheduled_time=datetime(2026, 3, 1, 12, 0, second, tzinfo=UTC),
        replica_id=lease.holder.replica_id,
        token=lease.token,
        started=datetime.now(UTC),
    )


def latch(client: KazooClient, root: str, election: str) -> list[tuple[str, int]]:
    """The latch nodes of ``election`` in sequence order, with their owners' session ids."""
    path = f"{root}/{election}/latch"
    out = []
    for child in client.get_children(path):
        stat = client.exists(f"{path}/{child}")
        if stat is not None:
            out.append((f"{path}/{child}", stat.ephemeralOwner))
    return sorted(out, key=lambda item: int(item[0][-10:]))


def full_latch(client: KazooClient, election: str, count: int) -> list[tuple[str, int]]:
    """Wait until every replica of ``election`` has joined the latch (chroot ``/baton``)."""

    def joined() -> list[tuple[str, int]] | None:
        nodes = latch(client, "/baton", election)
        return nodes if len(nodes) == count else None

    return wait_for(joined, 15, f"{count} latch nodes")


def writes(cluster: Cluster) -> list[Write]:
    sink = FencedSink(cluster.sink_path)
    try:
        return sink.writes()
    finally:
        sink.close()


def starts(cluster: Cluster) -> list[Write]:
    return [w for w in writes(cluster) if w.phase == "start"]


def stamp(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def current_leaders(cluster: Cluster) -> list[str]:
    """Replicas whose own log says they lead now (last change was an acquisition)."""
    leading = []
    for replica in cluster:
        changes = [
            e["event"]
            for e in replica.events()
            if e["event"] in ("leadership_acquired", "leadership_lost")
        ]
        if changes and changes[-1] == "leadership_acquired":
            leading.append(replica.name)
    return leading


def agreed_leader(cluster: Cluster, timeout: float, not_token: int | None = None) -> LeaseRecord:
    """The leader once the latch (as an observer reads it) and the replicas' own logs agree.

    Right after an outage they may not: the lowest node can belong to a replica whose
    session is still alive on the server while the replica itself cannot reach it yet.
    """

    def agreed() -> LeaseRecord | None:
        record = cluster.leader()
        if record is None or record.token == not_token:
            return None
        if current_leaders(cluster) != [record.replica_id]:
            return None
        acquired = cluster.replicas[record.replica_id].events("leadership_acquired")
        return record if acquired and acquired[-1]["token"] == record.token else None

    return wait_for(agreed, timeout, "observer and replicas to agree on one leader")


def assert_no_tick_twice(cluster: Cluster) -> None:
    counts = Counter(w.tick for w in starts(cluster))
    twice = {tick: n for tick, n in counts.items() if n > 1}
    assert not twice, f"ticks run more than once: {twice}"


def report(what: str, seconds: float) -> None:
    """Print a measured duration (visible with ``pytest -s``; the report quotes them)."""
    print(f"\n[measured] {what}: {seconds * 1000:.0f} ms", file=sys.stderr)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[Callable[[str, str], Cluster]]:
    """Clusters of replica processes; all stopped at teardown."""
    made: list[Cluster] = []

    def make(url: str, election: str) -> Cluster:
        cluster = Cluster(url, election, tmp_path / f"cluster{len(made)}")
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


# --- the latch, with real replica processes -----------------------------------------------


def test_three_replicas_one_leader_and_each_watches_only_its_predecessor(
    zookeeper_server: ZooKeeperServer,
    cluster_factory: Callable[[str, str], Cluster],
    admin: KazooClient,
    election: str,
) -> None:
    """3 replicas: exactly one leads (the lowest node's owner); no herd: the server's watch
    table shows each follower watching only its predecessor and the leader its own node."""
    cluster = cluster_factory(zookeeper_server.url(), election).start(3, lease_ttl=TTL)
    leader = cluster.wait_leader(timeout=15)
    nodes = full_latch(admin, election, 3)
    owner_of = {path: session for path, session in nodes}
    (first, s1), (second, s2), (third, s3) = nodes

    def watchers() -> dict[str, set[int]] | None:
        table = zookeeper_server.watches_by_path()
        current = {path: table.get(path, set()) for path in owner_of}
        expected = {first: {s1, s2}, second: {s3}, third: set()}
        return current if current == expected else None

    # Followers arm their watch within one elector loop; poll the server's table for it.
    assert wait_for(watchers, 10, "each follower watching its predecessor only")
    assert admin.get(first)[0] and json.loads(admin.get(first)[0])["replica"] == leader.replica_id
    assert wait_for(lambda: current_leaders(cluster) == [leader.replica_id], 10, "one leader")
    # Stable: still exactly one leader a few renewals later, by every replica's own log.
    time.sleep(TTL)
    assert current_leaders(cluster) == [leader.replica_id]
    assert [r.name for r in cluster if r.events("leadership_acquired")] == [leader.replica_id]


def test_kill9_leader_next_in_line_leads_within_session_timeout(
    zookeeper_server: ZooKeeperServer,
    cluster_factory: Callable[[str, str], Cluster],
    admin: KazooClient,
    election: str,
) -> None:
    """kill -9 the leader: its node goes when its session expires, and the owner of the next
    node (the one watching it) leads within the session timeout plus a small margin."""
    cluster = cluster_factory(zookeeper_server.url(), election).start(3, lease_ttl=TTL)
    first = cluster.wait_leader(timeout=15)
    nodes = full_latch(admin, election, 3)
    next_in_line = json.loads(admin.get(nodes[1][0])[0])["replica"]
    follower = cluster.replicas[next_in_line]
    wait_for(lambda: follower.events("replica_started"), 15, "the next replica to start")

    cluster.replicas[first.replica_id].signal(signal.SIGKILL)
    killed = time.monotonic()
    second = cluster.wait_leader(timeout=TTL + 5, not_token=first.token)
    failover = time.monotonic() - killed
    report(f"kill -9 failover, session timeout {TTL:g} s", failover)
    # ZooKeeper checks expiry once per tick (100 ms here); the watch does the rest.
    assert failover <= TTL + 0.5, f"failover took {failover:.2f} s"
    assert second.replica_id == next_in_line
    assert second.token > first.token
    acquired = wait_for(lambda: follower.events("leadership_acquired"), 5, "the acquisition")
    assert acquired[0]["token"] == second.token


def test_graceful_stop_hands_over_in_milliseconds(
    zookeeper_server: ZooKeeperServer,
    cluster_factory: Callable[[str, str], Cluster],
    election: str,
) -> None:
    """SIGTERM the leader: its release deletes the node and the watching follower leads
    within milliseconds of it, even with a long session timeout."""
    cluster = cluster_factory(zookeeper_server.url(), election).start(2, lease_ttl=10)
    first = cluster.wait_leader(timeout=15)
    follower = next(r for r in cluster if r.name != first.replica_id)
    wait_for(lambda: follower.events("replica_started"), 15, "the follower to start")
    leader = cluster.replicas[first.replica_id]

    leader.signal(signal.SIGTERM)
    sent = time.monotonic()
    second = cluster.wait_leader(timeout=5, not_token=first.token)
    observed = time.monotonic() - sent
    assert leader.proc.wait(timeout=15) == 0
    assert leader.events("lease_released")
    # leadership_lost is logged before the release is sent (lease_released only after its
    # reply, which can come after the follower has already taken over).
    stepped_down = stamp(leader.events("leadership_lost")[0])
    acquired = stamp(wait_for(lambda: follower.events("leadership_acquired"), 5, "acquired")[0])
    handover = acquired - stepped_down
    report("graceful handover (step-down -> acquired, from the replicas' logs)", handover)
    report("graceful handover (SIGTERM -> observer sees the new leader)", observed)
    assert second.replica_id == follower.name
    assert 0 <= handover < 0.25, f"handover took {handover * 1000:.0f} ms"
    assert observed < 1.0


def test_forced_session_expiry_old_leader_stops_before_new_one_starts(
    zookeeper_server: ZooKeeperServer,
    cluster_factory: Callable[[str, str], Cluster],
    admin: KazooClient,
    election: str,
) -> None:
    """Expire the leader's session from the server: the old leader stops (its log, its last
    write) before the new leader starts, no tick runs twice, and the claims agree."""
    cluster = cluster_factory(zookeeper_server.url(), election).start(
        3, lease_ttl=TTL, test_every="500ms"
    )
    first = cluster.wait_leader(timeout=15)
    old = cluster.replicas[first.replica_id]
    wait_for(lambda: len([w for w in starts(cluster) if w.token == first.token]) >= 3, 15, "ticks")

    owner = latch(admin, "/baton", election)[0][1]
    zookeeper_server.expire_session(owner)
    expired_at = time.time()
    second = cluster.wait_leader(timeout=5, not_token=first.token)
    new = cluster.replicas[second.replica_id]
    wait_for(lambda: len([w for w in starts(cluster) if w.token == second.token]) >= 3, 15, "ticks")
    cluster.stop()

    lost = [e for e in old.events("leadership_lost") if stamp(e) >= expired_at - 0.5]
    assert lost, "the old leader never logged its loss"
    acquired = [e for e in new.events("leadership_acquired") if e["token"] == second.token]
    assert stamp(lost[0]) <= stamp(acquired[0]), (lost[0], acquired[0])
    assert lost[0]["reason"] in (LossReason.CONNECTION_SUSPENDED, LossReason.SESSION_EXPIRED)

    ws = starts(cluster)
    old_writes = [w for w in ws if w.token == first.token]
    new_writes = [w for w in ws if w.token == second.token]
    assert max(w.at for w in old_writes) < min(w.at for w in new_writes)
    assert all(w.accepted for w in ws), "a write was refused: two leaders overlapped"
    assert_no_tick_twice(cluster)
    # The claims say the same: every fire claimed by the old token precedes those by the new.
    history = cluster.observer_history("test.tick", 100)
    old_fires = [r.scheduled_time for r in history if r.token == first.token]
    new_fires = [r.scheduled_time for r in history if r.token == second.token]
    assert old_fires and new_fires and max(old_fires) < min(new_fires)


@pytest.mark.parametrize("policy", ["lose", "wait"])
def test_server_kill9_and_restart_while_leading(
    own_zk: ZooKeeperServer,
    cluster_factory: Callable[[str, str], Cluster],
    election: str,
    policy: str,
) -> None:
    """ZooKeeper itself is killed (-9) and restarted under a leader: no tick runs twice, no job
    starts while it is down, and one replica leads afterwards. With ``lose`` the leader
    steps down at once; with ``wait`` it rides out the short outage with the same token
    whenever its session survives the restart."""
    # wait: the outage (JVM restart and reconnect) must fit within renew_deadline.
    ttl = TTL if policy == "lose" else 6.0
    cluster = cluster_factory(own_zk.url(), election).start(
        3, lease_ttl=ttl, test_every="500ms", zookeeper_on_suspended=policy
    )
    first = cluster.wait_leader(timeout=15)
    leader = cluster.replicas[first.replica_id]
    wait_for(lambda: len(starts(cluster)) >= 2, 15, "two ticks")

    own_zk.kill()
    killed_at = time.time()
    if policy == "lose":
        wait_for(lambda: leader.events("leadership_lost"), 5, "the leader to step down")
    # The restarted server may serve a few milliseconds before restart() returns.
    restarting_at = time.time()
    own_zk.restart()
    restarted_at = time.time()

    # ZooKeeper 3.8.0 leaves a connection that reaches it in the first milliseconds of its
    # start-up open and unanswered ("ZooKeeperServer not running", never closed); a client
    # caught by it waits out its whole handshake timeout and its session expires.
    session_kept = (
        policy == "wait"
        and wait_for(
            lambda: (
                next(
                    (
                        e["event"] == "zookeeper_reconnected"
                        for e in leader.events()
                        if e["event"] in ("zookeeper_reconnected", "zookeeper_session_lost")
                    ),
                    None,
                )
                is not None
            ),
            15,
            "the leader to reconnect or lose its session",
        )
        and not leader.events("zookeeper_session_lost")
    )
    # Otherwise the old node stays readable until its owner deletes it or its session ends.
    second = agreed_leader(cluster, 15, not_token=None if session_kept else first.token)
    wait_for(lambda: [w for w in starts(cluster) if w.at > restarted_at][1:], 15, "2 ticks after")
    losses = leader.events("leadership_lost")
    cluster.stop()

    assert_no_tick_twice(cluster)
    outage = [w for w in starts(cluster) if killed_at + 0.1 < w.at < restarting_at]
    assert not outage, f"jobs started while ZooKeeper was down: {outage}"
    if policy == "lose":
        assert losses[0]["reason"] == LossReason.CONNECTION_SUSPENDED
        assert second.token > first.token
    elif session_kept:
        assert not losses, "the leader gave up during a short outage"
        assert (second.replica_id, second.token) == (first.replica_id, first.token)
    else:
        report("wait: the leader's session did not survive the restart (server bug)", 0)
        assert losses[0]["reason"] in ("renew_deadline", "session-expired")
        assert second.token > first.token


# --- connection states, one backend at a time ----------------------------------------------


def test_suspension_loses_leadership_at_once_with_the_lose_policy(
    own_zk: ZooKeeperServer, open_backend: Callable[..., ZooKeeperBackend], election: str
) -> None:
    """lose: on_lost fires at suspension, renew and claim refuse, and after reconnecting the
    old node is deleted so the latch moves on; re-acquiring gives a larger token."""
    backend = open_backend(own_zk.url(), session_timeout=4.0)
    lease = acquire(backend, election)
    lost: list[str] = []
    backend.watch(lease, lost.append)

    own_zk.kill()
    assert wait_until(lambda: lost, 3), "no on_lost at suspension"
    assert lost == [LossReason.CONNECTION_SUSPENDED]
    with pytest.raises(LeaseLost, match=LossReason.CONNECTION_SUSPENDED):
        backend.renew(lease)
    with pytest.raises(LeaseLost):
        backend.claim(lease, run_for(lease), Retention())

    own_zk.restart()
    observer = open_backend(own_zk.url())
    assert wait_until(lambda: observer.read(election) is None, 5), "the old node was kept"
    again = acquire(backend, election)
    assert again.token > lease.token
    assert lost == [LossReason.CONNECTION_SUSPENDED], "on_lost called more than once"


def test_suspension_with_wait_policy_keeps_the_lease_and_reverifies_it(
    own_zk: ZooKeeperServer, open_backend: Callable[..., ZooKeeperBackend], election: str
) -> None:
    """wait: while suspended nothing is claimed (BackendUnavailable) but the lease is kept;
    reconnected to the same session it renews with the same token, and its watch is re-armed
    (a deletion after the reconnect is noticed at once)."""
    backend = open_backend(own_zk.url(), session_timeout=6.0, on_suspended="wait")
    for _ in range(3):
        lease = acquire(backend, election)
        session = backend.session_id
        lost: list[str] = []
        backend.watch(lease, lost.append)

        own_zk.kill()
        assert wait_until(lambda: backend.session_id is None, 3), "never noticed the outage"
        with pytest.raises(BackendUnavailable):
            backend.claim(lease, run_for(lease), Retention())
        with pytest.raises(BackendUnavailable):
            backend.renew(lease)
        assert lost == []
        own_zk.restart()
        assert wait_until(lambda: backend.session_id is not None, 10), "never reconnected"
        if backend.session_id == session:
            break
        # ZooKeeper 3.8.0 can leave a connection made during its start-up open and
        # unanswered; this one was, and the session expired meanwhile. The lease is lost,
        # as it must be then; try the outage again.
        assert wait_until(lambda: lost, 2) and lost == [LossReason.SESSION_EXPIRED]  # noqa: B023 (same turn)
        with pytest.raises(LeaseLost):
            backend.renew(lease)
    else:
        pytest.fail("the session never survived a ZooKeeper restart in 3 outages")

    assert backend.renew(lease).token == lease.token
    assert backend.claim(lease, run_for(lease), Retention()) is not None
    assert lost == []
    admin = own_zk.client()
    try:
        admin.delete(lease.handle)
        deleted = time.monotonic()
        assert wait_until(lambda: lost, 2), "the re-armed watch did not fire"
        report("node deleted -> on_lost after a reconnect", time.monotonic() - deleted)
    finally:
        admin.stop()
        admin.close()
    assert lost == [LossReason.NODE_DELETED]


def test_leader_node_deleted_by_anyone_loses_at_once(
    zookeeper_server: ZooKeeperServer,
    open_backend: Callable[..., ZooKeeperBackend],
    admin: KazooClient,
    election: str,
) -> None:
    """Someone deletes the leader's node: on_lost within milliseconds, renew and claim refuse,
    and a follower waiting behind it wakes up and leads."""
    url = zookeeper_server.url("/baton-deleted", USER, PASSWORD)
    leader, follower = open_backend(url), open_backend(url)
    lease = acquire(leader, election, "r1")
    fired = threading.Event()
    lost: list[str] = []

    def on_lost(reason: str) -> None:
        lost.append(reason)
        fired.set()

    leader.watch(lease, on_lost)
    queued = Holder.new("r2")
    assert follower.try_acquire(election, queued, 5.0) is None
    woke = threading.Event()
    waiter = threading.Thread(
        target=lambda: (follower.wait_for_change(election, 10.0), woke.set()), daemon=True
    )
    waiter.start()
    # The test is about what happens once the follower watches the leader's node: wait for the
    # server's watch table to show it.
    assert wait_for(
        lambda: follower.session_id in zookeeper_server.watches_by_path().get(lease.handle, ()),
        5,
        "the follower to watch the leader's node",
        interval=0.05,
    )

    admin.delete(lease.handle)
    deleted = time.monotonic()
    assert fired.wait(2)
    report("leader node deleted -> on_lost", time.monotonic() - deleted)
    assert woke.wait(2), "the follower was not woken by the deletion"
    assert lost == [LossReason.NODE_DELETED]
    with pytest.raises(LeaseLost):
        leader.renew(lease)
    with pytest.raises(LeaseLost):
        leader.claim(lease, run_for(lease), Retention())
    successor = follower.try_acquire(election, queued, 5.0)
    assert successor is not None and successor.token > lease.token


def test_session_timeout_is_capped_by_what_the_server_grants(election: str) -> None:
    """A server granting shorter sessions than asked caps the lease TTL to what it granted,
    so the local deadline still ends before the session can expire."""
    server = ZooKeeperServer(max_session_timeout=1.0).start()
    backend = ZooKeeperBackend.from_url(
        server.url(), op_timeout=OP_TIMEOUT, options=ZooKeeperSettings(session_timeout=5.0)
    )
    try:
        lease = acquire(backend, election, ttl=5.0)
        assert backend.negotiated_session_timeout == 1.0
        assert lease.ttl == 1.0
        assert backend.renew(lease).ttl == 1.0
    finally:
        backend.close()
        server.cleanup()


# --- ACLs and credentials ---------------------------------------------------------------------


def test_client_without_credentials_cannot_touch_the_latch_or_history(
    zookeeper_server: ZooKeeperServer,
    open_backend: Callable[..., ZooKeeperBackend],
    admin: KazooClient,
    election: str,
) -> None:
    """With credentials, every node carries a digest ACL: a client without them (or with a
    wrong password) can neither delete nor rewrite nor read the latch node or a run record."""
    backend = open_backend(zookeeper_server.url("/baton-acl", USER, PASSWORD))
    lease = acquire(backend, election)
    run = backend.claim(lease, run_for(lease), Retention())
    assert run is not None
    run_node = f"/baton-acl/{election}/runs/job/{run.key:015d}"
    for path in ("/baton-acl", f"/baton-acl/{election}", lease.handle, run_node):
        acls, _ = admin.get_acls(path)
        assert [(a.id.scheme, a.id.id.split(":")[0], a.perms) for a in acls] == [
            ("digest", USER, 31)
        ], path

    for auth in (None, (USER, "wrong-password")):
        intruder = zookeeper_server.client(auth=auth)
        try:
            for call, args in (
                (intruder.delete, (lease.handle,)),
                (intruder.set, (lease.handle, b"{}")),
                (intruder.get, (lease.handle,)),
                (intruder.delete, (run_node,)),
                (intruder.set, (run_node, b"{}")),
                (intruder.create, (f"/baton-acl/{election}/latch/x",)),
            ):
                with pytest.raises(NoAuthError):
                    call(*args)
        finally:
            intruder.stop()
            intruder.close()
    assert backend.renew(lease).token == lease.token
    assert backend.history(election, "job", 10) == [run]


def test_wrong_digest_password_is_a_clear_error_from_check(
    zookeeper_server: ZooKeeperServer,
    open_backend: Callable[..., ZooKeeperBackend],
    election: str,
    tmp_path: Path,
) -> None:
    """A wrong password (accepted by ZooKeeper at connect) fails check() with a message that
    names the redacted URL and says so; no credentials at all is an auth error too; the CLI
    exits 2 with that one line."""
    right = open_backend(zookeeper_server.url("/baton-auth", USER, PASSWORD))
    right.check()
    acquire(right, election)  # creates the chroot with its ACL

    wrong_url = zookeeper_server.url("/baton-auth", USER, "wrong-password")
    wrong = open_backend(wrong_url)
    with pytest.raises(BackendAuthError) as caught:
        wrong.check()
    message = str(caught.value)
    assert f"zookeeper://{USER}:***@{zookeeper_server.hosts}/baton-auth" in message
    assert "wrong password" in message and "wrong-password" not in message
    with pytest.raises(BackendAuthError):
        wrong.try_acquire(election, Holder.new("r2"), 5.0)

    anonymous = open_backend(zookeeper_server.url("/baton-auth"))
    with pytest.raises(BackendAuthError, match="user:password"):
        anonymous.check()

    from tests.harness.cli import baton

    for args in (["leader"], ["run", "--jobs", "tests.jobs.replica"]):
        result = baton(*args, "--backend", wrong_url, cwd=tmp_path)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, result.stderr
        assert len(lines) == 1 and lines[0].startswith("baton: error:"), result.stderr
        assert "wrong password" in lines[0] and "wrong-password" not in result.stderr


def test_observer_reads_without_joining_the_latch(
    zookeeper_server: ZooKeeperServer,
    open_backend: Callable[..., ZooKeeperBackend],
    admin: KazooClient,
    election: str,
) -> None:
    """read() shows the leader (no TTL: the session keeps it) and never creates a node."""
    observer = open_backend(zookeeper_server.url("/baton-observe", USER, PASSWORD))
    assert observer.read(election) is None
    assert admin.exists(f"/baton-observe/{election}") is None
    leader = open_backend(zookeeper_server.url("/baton-observe", USER, PASSWORD))
    lease = acquire(leader, election, "r1")
    record = observer.read(election)
    assert record is not None
    assert (record.replica_id, record.host, record.token, record.ttl_left) == (
        "r1",
        "test",
        lease.token,
        None,
    )
    assert len(admin.get_children(f"/baton-observe/{election}/latch")) == 1


def test_tls_verifies_the_server_certificate_and_its_name(
    tmp_path: Path, open_backend: Callable[..., ZooKeeperBackend], election: str
) -> None:
    """TLS (config section options) works with the right CA and host name; a certificate
    from an unknown CA or for another name is refused, and the error says why."""
    tls = make_tls_files(tmp_path)
    server = ZooKeeperServer(tls=tls).start()
    try:
        secure = open_backend(server.url(), ca_file=str(tls.ca_cert), connection_timeout=2.0)
        secure.check()
        lease = acquire(secure, election)
        assert secure.claim(lease, run_for(lease), Retention()) is not None

        wrong_name = server.url().replace("localhost", "127.0.0.1")
        for url, options in (
            (wrong_name, {"ca_file": str(tls.ca_cert)}),  # certificate is for localhost only
            (server.url(), {"tls": True}),  # system CAs do not know the test CA
        ):
            refused = open_backend(url, connection_timeout=1.0, **options)
            with pytest.raises(BackendUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
                refused.check()
    finally:
        server.cleanup()
