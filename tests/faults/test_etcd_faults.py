"""The etcd backend under the faults its users meet, on a real 3-member etcd cluster: the
etcd leader member killed and restarted, a member stopped (SIGSTOP), one Baton replica cut
off from etcd (a TCP proxy), a holder stopped past its TTL, a foreign delete of the leader
key, a compaction; and the security setups: a least-privilege user (a key-prefix role)
with token refresh, TLS with CA verification and a client certificate.

Every server is real (tests/harness/etcd_server.py).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.backends import from_url
from scheduler.backends.base import Backend
from scheduler.backends.runs import Retention
from scheduler.backends.states import LossReason
from scheduler.errors import BackendAuthError, BackendPermanentError, BackendUnavailable, LeaseLost
from scheduler.leadership.lease import Lease
from scheduler.leadership.members import Member
from tests.chaos.proxy import Proxy, ProxyLoop
from tests.contract.support import acquire, finished, holder, now_ms, run_for, wait_until
from tests.harness.etcd_server import (
    BATON_PASSWORD,
    BATON_PREFIX,
    EtcdCluster,
    make_tls_files,
)
from tests.harness.replicas import Cluster
from tests.harness.sink import FencedSink

OP_TIMEOUT = 1.0
RETENTION = Retention(limit=100)
#: The TTL of the leases these tests let expire: etcd's minimum here is 1 s.
TTL = 2.0


@pytest.fixture(scope="module")
def etcd3() -> Iterator[EtcdCluster]:
    """A 3-member etcd cluster for this module; a test that kills a member restarts it."""
    cluster = EtcdCluster(size=3).start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


def _renews(backend: Backend, lease: Lease) -> bool:
    try:
        backend.renew(lease)
    except BackendUnavailable:
        return False
    return True


def _waiting(follower: Backend, name: str) -> threading.Event:
    """Start a follower's 20 s wait for a change of ``name``; the event set when it returns."""
    woke = threading.Event()

    def wait() -> None:
        follower.wait_for_change(name, 20.0)
        woke.set()

    threading.Thread(target=wait, daemon=True).start()
    return woke


def _holder_key(name: str) -> str:
    return f"{BATON_PREFIX}/{name}/lease/holder"


# -- the etcd cluster loses a member ----------------------------------------------------------


def test_a_killed_etcd_leader_member_keeps_the_lease_and_tokens_still_grow(
    etcd3: EtcdCluster, opened: Callable[..., Backend], election: str
) -> None:
    """kill -9 of the Raft leader (listed first in the URL): calls fail as transient until
    the others elect a leader, then the same lease renews and claims; after the member's
    restart a new acquisition gets a larger token."""
    leader = etcd3.leader()
    ordered = [leader] + [m for m in etcd3.members if m is not leader]
    backend = opened(etcd3.url(members=ordered))
    lease = acquire(backend, election, holder("r1"), ttl=30.0)
    leader.kill()
    try:
        assert wait_until(lambda: _renews(backend, lease), timeout=15), "never renewed again"
        run = backend.claim(lease, run_for(lease, now_ms()), RETENTION)
        assert run is not None
        assert backend.lookup(election, run.job, run.scheduled_time) == run
    finally:
        leader.restart()
    backend.release(lease)
    again = acquire(backend, election, holder("r2"))
    assert again.token > lease.token


def test_a_stopped_member_holds_no_call_past_op_timeout_and_the_next_call_fails_over(
    etcd3: EtcdCluster, opened: Callable[..., Backend], election: str
) -> None:
    """SIGSTOP a member listed first (its TCP stack still accepts): a call fails within
    about op_timeout, and the following calls go to the other members."""
    backend = opened(etcd3.url(), op_timeout=0.5)
    lease = acquire(backend, election, holder("r1"), ttl=30.0)
    stopped = etcd3.members[0]
    stopped.pause()
    try:
        took = []
        for _ in range(3):
            started = time.monotonic()
            _renews(backend, lease)
            took.append(time.monotonic() - started)
        assert max(took) < 0.5 * 2 + 0.5, f"a call took {max(took):.2f} s"
        assert wait_until(lambda: _renews(backend, lease), timeout=10)
    finally:
        stopped.resume()


# -- one Baton replica cut off from etcd ------------------------------------------------------


def test_a_partitioned_holder_is_replaced_and_fenced_after_the_partition_heals(
    etcd3: EtcdCluster, opened: Callable[..., Backend], election: str
) -> None:
    """The holder reaches etcd through proxies that stop forwarding: its calls fail as
    transient, etcd expires its lease, a follower takes over with a larger token; once
    healed, the old holder's renewal and claim raise LeaseLost and store nothing."""
    loop = ProxyLoop()
    proxies = [Proxy(loop, member.port) for member in etcd3.members]
    try:
        url = "etcd://" + ",".join(f"127.0.0.1:{p.port}" for p in proxies) + BATON_PREFIX
        cut_off, other = opened(url), opened(etcd3.url())
        old = acquire(cut_off, election, holder("r1"), ttl=TTL)
        for proxy in proxies:
            proxy.blackhole()
        with pytest.raises(BackendUnavailable):
            cut_off.renew(old)
        new = wait_until_acquired(other, election, 15)
        assert new.token > old.token
        for proxy in proxies:
            proxy.heal()
        with pytest.raises(LeaseLost):
            cut_off.renew(old)
        late = run_for(old, now_ms(), job="late")
        with pytest.raises(LeaseLost):
            cut_off.claim(old, late, RETENTION)
        assert other.lookup(election, "late", late.scheduled_time) is None
        assert other.claim(new, run_for(new, late.scheduled_time, job="late"), RETENTION)
    finally:
        for proxy in proxies:
            proxy.close()
        loop.close()


def wait_until_acquired(backend: Backend, name: str, timeout: float) -> Lease:
    """Acquire ``name`` as soon as it is free (waiting on the backend's watch)."""
    deadline = time.monotonic() + timeout
    who = holder("r2")
    while time.monotonic() < deadline:
        lease = backend.try_acquire(name, who, 30.0)
        if lease is not None:
            return lease
        backend.wait_for_change(name, 1.0)
    raise AssertionError(f"{name} was never free within {timeout} s")


# -- the leader key under foreign hands, compaction --------------------------------------------


def test_a_foreign_delete_of_the_leader_key_ends_the_term_and_wakes_a_follower(
    etcd3: EtcdCluster, opened: Callable[..., Backend], election: str
) -> None:
    """Someone deletes the leader key while its etcd lease lives: the follower waiting on
    the watch wakes, the holder's renewal raises node-deleted and its claims are refused,
    and the next acquisition has a larger token."""
    holder_backend, follower = opened(etcd3.url()), opened(etcd3.url())
    lease = acquire(holder_backend, election, holder("r1"), ttl=30.0)
    woke = _waiting(follower, election)

    def deleted_and_woken() -> bool:
        # The waiter may not be watching yet: delete until it wakes (later ones find none).
        etcd3.delete(_holder_key(election))
        return woke.wait(0.2)

    assert wait_until(deleted_and_woken, timeout=10), "the follower never woke"
    with pytest.raises(LeaseLost) as lost:
        holder_backend.renew(lease)
    assert lost.value.reason in (LossReason.NODE_DELETED, LossReason.EXPIRED)
    with pytest.raises(LeaseLost):
        holder_backend.claim(lease, run_for(lease, now_ms()), RETENTION)
    assert acquire(follower, election, holder("r2")).token > lease.token


def test_compaction_breaks_no_read_and_no_handover(
    etcd3: EtcdCluster, opened: Callable[..., Backend], election: str
) -> None:
    """After a physical compaction, history and lookups read as before, and a release
    still wakes a waiting follower."""
    backend, follower = opened(etcd3.url()), opened(etcd3.url())
    lease = acquire(backend, election, holder("r1"))
    run = backend.claim(lease, run_for(lease, now_ms()), RETENTION)
    assert run is not None
    done = finished(run)
    backend.finish(election, done)
    etcd3.compact()
    assert backend.history(election, run.job, 10) == [done]
    assert backend.lookup(election, run.job, run.scheduled_time) == done
    woke = _waiting(follower, election)
    while not woke.wait(0.1):
        backend.release(lease)
        etcd3.compact()
        lease = acquire(backend, election, holder("r1"))
    assert woke.is_set()


# -- replicas: a holder stopped past its TTL --------------------------------------------------


def test_a_stopped_holder_past_its_ttl_is_replaced_and_no_tick_runs_twice(
    etcd3: EtcdCluster, tmp_path: Path, election: str
) -> None:
    """Two ``baton run`` replicas; SIGSTOP the leader past its TTL: the other leads with a
    larger token; after SIGCONT the old one does not fire, and every tick ran once."""
    cluster = Cluster(etcd3.url(), election, tmp_path / "cluster", env={"BATON_TEST_EVERY": "1s"})
    sink: FencedSink | None = None
    try:
        cluster.start(2, lease_ttl=2)
        first = cluster.wait_leader(20)
        stopped = cluster.replicas[first.replica_id]
        sink = FencedSink(cluster.sink_path)

        def started(token: int) -> bool:
            assert sink is not None
            return any(w.phase == "start" and w.token == token for w in sink.writes())

        assert wait_until(lambda: started(first.token), 20), cluster.dump_logs()
        stopped.signal(signal.SIGSTOP)
        try:
            second = cluster.wait_leader(20, not_token=first.token)
            assert second.token > first.token and second.replica_id != first.replica_id
            assert wait_until(lambda: started(second.token), 20), cluster.dump_logs()
        finally:
            stopped.signal(signal.SIGCONT)
        assert wait_until(lambda: bool(stopped.events("leadership_lost")), 20), cluster.dump_logs()
        ticks = [w.tick for w in sink.writes() if w.phase == "start" and w.accepted]
        assert len(ticks) == len(set(ticks)), f"a tick ran twice: {sorted(ticks)}"
    finally:
        if sink is not None:
            sink.close()
        cluster.close()


# -- security: a least-privilege user, TLS ----------------------------------------------------


def test_a_least_privilege_user_runs_a_whole_term_and_its_token_is_refreshed(
    tmp_path: Path, election: str
) -> None:
    """etcd auth on, simple tokens living 1 s; a user whose role may only read and write
    the prefix: preflight, a whole term, presence and controls work, also after its auth
    token expired; another prefix is one permission error; a wrong password is refused;
    no message shows a password."""
    cluster = EtcdCluster(size=1, extra=("--auth-token-ttl", "1")).start()
    backends: list[Backend] = []
    try:
        cluster.enable_auth()
        backend = from_url(cluster.url(), op_timeout=OP_TIMEOUT)
        backends.append(backend)
        backend.check()
        backend.preflight(election)
        lease = acquire(backend, election, holder("r1"), ttl=10.0)
        run = backend.claim(lease, run_for(lease, now_ms()), RETENTION)
        assert run is not None
        started = backend.start(lease, run.started_now(run.started))
        backend.finish(election, finished(started))
        # Past the token's TTL (the server's, on its clock: waited for, not assumed).
        time.sleep(2.5)
        lease = backend.renew(lease)
        now = datetime.now(UTC)
        backend.announce(election, Member("r1", "h1", "0.1", now, now), 10)
        assert [m.replica_id for m in backend.members(election)] == ["r1"]
        backend.set_control(election, "resign", "1")
        assert backend.controls(election) == {"resign": "1"}
        assert [r.outcome for r in backend.history(election, run.job, 5)] == ["ok"]
        backend.release(lease)
        assert backend.read(election) is None

        outside = from_url(cluster.url(prefix="/elsewhere"), op_timeout=OP_TIMEOUT)
        backends.append(outside)
        with pytest.raises(BackendAuthError) as denied:
            outside.preflight(election)
        assert "permission denied" in str(denied.value)
        wrong = from_url(cluster.url().replace(BATON_PASSWORD, "wrong"), op_timeout=OP_TIMEOUT)
        backends.append(wrong)
        with pytest.raises(BackendAuthError) as refused:
            wrong.check()
        for error in (denied.value, refused.value):
            assert BATON_PASSWORD not in str(error) and "wrong" not in str(error)
    finally:
        for opened_backend in backends:
            opened_backend.close()
        cluster.cleanup()


def test_tls_with_ca_verification_and_a_client_certificate(tmp_path: Path, election: str) -> None:
    """etcds:// with the server's CA and a client certificate runs a term; with another CA
    the handshake is refused as a permanent error naming TLS."""
    cluster = EtcdCluster(size=1, tls=True).start()
    backends: list[Backend] = []
    try:
        backend = from_url(cluster.url(), op_timeout=OP_TIMEOUT)
        backends.append(backend)
        backend.preflight(election)
        lease = acquire(backend, election, holder("r1"))
        assert backend.claim(lease, run_for(lease, now_ms()), RETENTION) is not None
        backend.release(lease)

        other = tmp_path / "other-ca"
        other.mkdir()
        assert cluster.tls is not None
        wrong_ca = make_tls_files(other).ca_cert
        url = cluster.url().replace(str(cluster.tls.ca_cert), str(wrong_ca))
        wrong = from_url(url, op_timeout=OP_TIMEOUT)
        backends.append(wrong)
        with pytest.raises(BackendPermanentError) as refused:
            wrong.check()
        assert "TLS" in str(refused.value)
    finally:
        for opened_backend in backends:
            opened_backend.close()
        cluster.cleanup()
