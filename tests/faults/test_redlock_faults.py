"""Redlock faults on real, independent redis-server processes: a primary killed and
restarted (with persistence, without it after a TTL, and empty at once: the boundary),
partitions of a minority and of a majority (a TCP proxy in front of each primary), a
leader paused past its validity, a foreign delete on one primary, clock jumps, and five
primaries.

Every test has a group of its own, so nothing here disturbs the contract suite's group.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.backends.redis.keys import epoch_key, lease_keys, run_keys
from scheduler.backends.redlock import RedlockBackend
from scheduler.backends.runs import Retention, fire_key
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import BackendUnavailable, LeaseLost
from scheduler.leadership.lease import Holder, Lease
from tests.chaos.proxy import Proxy, ProxyLoop
from tests.contract.support import at, run_for, wait_until
from tests.harness.redis_server import RedisServer
from tests.harness.redlock_group import RedlockGroup

OP_TIMEOUT = 0.5
TTL = 0.5
LONG_TTL = 30.0

Open = Callable[..., RedlockBackend]


@contextmanager
def _own_group(size: int = 3, persistent: bool = False) -> Iterator[RedlockGroup]:
    """A group of ``size`` primaries started for one test; resumed and removed after it."""
    primaries = RedlockGroup(size, persistent=persistent).start()
    try:
        yield primaries
    finally:
        _resume_all(primaries)
        primaries.cleanup()


@pytest.fixture
def group() -> Iterator[RedlockGroup]:
    """Three primaries without persistence, for this test alone."""
    with _own_group() as primaries:
        yield primaries


@pytest.fixture
def aof_group() -> Iterator[RedlockGroup]:
    """Three primaries with AOF and ``appendfsync always``, for this test alone."""
    with _own_group(persistent=True) as primaries:
        yield primaries


@pytest.fixture
def open_backend() -> Iterator[Open]:
    """Open Redlock backends (short op_timeout); all closed at teardown."""
    opened: list[RedlockBackend] = []

    def make(url: str, clock: Clock = SYSTEM_CLOCK) -> RedlockBackend:
        backend = RedlockBackend.from_url(url, op_timeout=OP_TIMEOUT, clock=clock)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


def _stop(server: RedisServer) -> None:
    os.kill(server.pid, signal.SIGSTOP)


def _resume(server: RedisServer) -> None:
    if server.running:
        os.kill(server.pid, signal.SIGCONT)


def _resume_all(group: RedlockGroup) -> None:
    for server in group:
        _resume(server)


def _acquire(backend: RedlockBackend, name: str, replica: str, ttl: float = LONG_TTL) -> Lease:
    lease = backend.try_acquire(name, Holder.new(replica), ttl)
    assert lease is not None, f"{replica} could not acquire {name}"
    return lease


def _lease_gone(server: RedisServer, name: str) -> bool:
    client = server.client()
    try:
        return not client.exists(lease_keys(name)[0])
    finally:
        client.close()


def _get(server: RedisServer, key: str) -> Any:
    client = server.client()
    try:
        return client.get(key)
    finally:
        client.close()


def _now_fire(ahead: float = 0.0) -> datetime:
    moment = datetime.now(UTC) + timedelta(seconds=ahead)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# -- a primary killed ------------------------------------------------------------------------


def test_a_leader_keeps_its_lease_and_claims_with_one_primary_killed(
    group: RedlockGroup, open_backend: Open
) -> None:
    """kill -9 of one primary of three: renewals and claims still reach a majority, and a
    successor after the release takes over with a higher token."""
    leader, successor = open_backend(group.url()), open_backend(group.url())
    lease = _acquire(leader, "kill-one", "r1")
    group[0].kill()
    renewed = leader.renew(lease)
    run = run_for(renewed, at(0))
    assert leader.claim(renewed, run, Retention()) == run
    assert leader.lookup("kill-one", "job", at(0)) == run
    leader.release(renewed)
    after = _acquire(successor, "kill-one", "r2")
    assert after.token > lease.token
    assert successor.claim(after, run_for(after, at(0)), Retention()) is None


def test_a_primary_restarted_empty_after_the_ttl_is_reseeded_and_refuses_old_fires(
    group: RedlockGroup, open_backend: Open
) -> None:
    """Without persistence, kept down longer than the TTL (the documented assumption): the
    next acquisition (TTL 30 s: the primary has been up for less) does not let it vote,
    re-seeds its token counter, opens a claim epoch on it, and it votes again from then
    on; no old fire can be claimed through it."""
    first, second = open_backend(group.url()), open_backend(group.url())
    lease = _acquire(first, "empty-later", "r1", ttl=TTL)
    assert first.claim(lease, run_for(lease, at(0)), Retention()) is not None
    group[0].kill()
    assert wait_until(lambda: _lease_gone(group[1], "empty-later"), 5.0)
    group[0].restart()  # empty, a TTL after the kill
    _, _, token_key = lease_keys("empty-later")
    assert _get(group[0], token_key) is None
    later = _acquire(second, "empty-later", "r2")
    assert later.token > lease.token
    assert int(_get(group[0], token_key)) == later.token  # re-seeded by the seal
    assert str(_get(group[0], epoch_key("empty-later"))).startswith("0:")  # may have lost claims
    assert second.claim(later, run_for(later, at(0)), Retention()) is None
    second.release(later)
    # It voted again: with another primary down it makes the majority.
    group[1].kill()
    again = _acquire(second, "empty-later", "r2")
    assert again.token > later.token


def test_a_primary_with_aof_restarted_at_once_votes_only_after_the_ttl(
    aof_group: RedlockGroup, open_backend: Open
) -> None:
    """With appendfsync always, a primary restarted at once keeps its counter but is
    another server (run_id): it does not vote until it has been up for longer than the TTL
    (its lock of the last holder could be one it lost), so with another primary stopped the
    acquisition is refused, then succeeds once the restarted one is up long enough."""
    backend = open_backend(aof_group.url())
    lease = _acquire(backend, "aof", "r1", ttl=TTL)
    backend.release(lease)
    aof_group[0].kill()
    aof_group[0].start()
    _, _, token_key = lease_keys("aof")
    assert int(_get(aof_group[0], token_key)) == lease.token  # persisted
    _stop(aof_group[1])
    with pytest.raises(BackendUnavailable, match="restarted less than the TTL ago"):
        backend.try_acquire("aof", Holder.new("r2"), TTL)
    tokens: list[int] = []

    def acquired() -> bool:
        try:
            got = backend.try_acquire("aof", Holder.new("r2"), TTL)
        except BackendUnavailable:
            return False
        if got is not None:
            tokens.append(got.token)
        return got is not None

    assert wait_until(acquired, 5.0, poll=0.2), "never acquired after the uptime passed the TTL"
    assert tokens[0] > lease.token


def test_a_primary_restarted_empty_at_once_is_detected_and_refused(
    group: RedlockGroup, open_backend: Open
) -> None:
    """The boundary of the assumption: a primary restarted empty at once while it was one
    of only two primaries holding the last term's lock, token and claim. The third primary
    (cut off during that term) and the empty one would make a majority that knows neither:
    Baton sees the empty primary (no run_id, no keys, while the other remembers the
    election), does not let it vote while it has been up for less than the TTL, and
    refuses the acquisition, naming it. Once a primary that kept its data answers again,
    the acquisition succeeds above the old token, and the old fire stays claimed: the
    empty primary's claim epoch refuses it there."""
    a, b, c = group
    leader, successor = open_backend(group.url()), open_backend(group.url())
    name = "empty-at-once"
    warm = _acquire(leader, name, "r1", ttl=TTL)  # every primary remembers the election
    leader.release(warm)
    _stop(c)  # cut off for the whole term below
    lease = _acquire(leader, name, "r1", ttl=LONG_TTL)
    fire = run_for(lease, at(0))
    assert leader.claim(lease, fire, Retention()) == fire  # on a and b only
    a.kill()
    a.restart()  # empty, at once: the lease, the token and the claim are gone from it
    _stop(b)
    _resume(c)
    # c granted the queued lock of the term above when it resumed; it expires by TTL only
    # in 30 s, so it is deleted here as that term's holder would release it.
    client = c.client()
    client.delete(lease_keys(name)[0], lease_keys(name)[1])
    client.close()
    with pytest.raises(BackendUnavailable, match=rf"restarted empty .*{a.port}"):
        successor.try_acquire(name, Holder.new("r2"), TTL)
    assert _lease_gone(a, name) and _lease_gone(c, name)  # the locks were given back
    _resume(b)
    leader.release(lease)
    # The refused attempt's lock request queued on the stopped b may land as it resumes,
    # and a give-back sent on a pooled connection to a's old process fails once: locks of
    # failed attempts, gone by their TTL at the latest.
    won: list[Lease] = []

    def acquired() -> bool:
        try:
            got = successor.try_acquire(name, Holder.new("r2"), 2.0)
        except BackendUnavailable:
            return False  # b busy with such a lock: a and c alone are refused, as above
        if got is not None:
            won.append(got)
        return got is not None

    assert wait_until(acquired, 10.0, poll=0.1)
    after = won[0]
    assert after.token > lease.token
    assert successor.claim(after, run_for(after, at(0)), Retention()) is None
    # Only b still holds the record: history and claimed() show the fire (a catch-up
    # skips it); lookup wants a majority of copies and says None.
    assert [run.attempt for run in successor.history(name, "job", 10)] == [fire.attempt]
    assert successor.claimed(name, "job", at(0), at(0)) == {fire.key}


def test_two_primaries_emptied_one_after_the_other_vote_again_after_the_ttl(
    group: RedlockGroup, open_backend: Open
) -> None:
    """Two of three primaries lose their data in turn while one leader renews throughout
    (no acquisition re-seeds the first before the second goes): only one primary kept its
    data, so acquisitions are refused while the emptied ones have been up for less than
    the TTL, then succeed (Redlock's delayed restart, enforced); the fires claimed before
    are not claimed again (claim epochs on the emptied primaries), and the token goes on
    increasing."""
    a, b, _ = group
    name = "two-emptied"
    leader, successor = open_backend(group.url()), open_backend(group.url())
    lease = _acquire(leader, name, "r1", ttl=TTL)
    fire = run_for(lease, at(0))
    assert leader.claim(lease, fire, Retention()) == fire
    leader.release(lease)
    for server in (a, b):
        server.kill()
        server.restart()  # empty
    with pytest.raises(BackendUnavailable, match="restarted empty"):
        successor.try_acquire(name, Holder.new("r2"), TTL)
    won: list[Lease] = []

    def acquired() -> bool:
        try:
            got = successor.try_acquire(name, Holder.new("r2"), TTL)
        except BackendUnavailable:
            return False
        if got is not None:
            won.append(got)
        return got is not None

    assert wait_until(acquired, 10.0, poll=0.2), "the emptied primaries never voted again"
    after = won[0]
    assert after.token > lease.token
    assert successor.claim(after, run_for(after, at(0)), Retention()) is None


# -- partitions ------------------------------------------------------------------------------


@pytest.fixture
def proxies(group: RedlockGroup) -> Iterator[list[Proxy]]:
    """A TCP proxy in front of each primary of ``group`` (blackhole one to cut it off)."""
    loop = ProxyLoop()
    made = [Proxy(loop, server.port) for server in group]
    try:
        yield made
    finally:
        for proxy in made:
            proxy.close()
        loop.close()


def test_a_minority_cut_off_from_the_leader_changes_nothing(
    group: RedlockGroup, proxies: list[Proxy], open_backend: Open
) -> None:
    """One primary of three blackholed: the leader renews, claims, starts and releases."""
    backend = open_backend(group.url([p.port for p in proxies]))
    lease = _acquire(backend, "minority", "r1", ttl=5.0)
    proxies[2].blackhole()
    renewed = backend.renew(lease)
    run = run_for(renewed, at(0))
    assert backend.claim(renewed, run, Retention()) == run
    started = backend.start(renewed, run.started_now(datetime.now(UTC)))
    assert started.outcome == "running"
    backend.release(renewed)
    assert backend.read("minority") is None


def test_a_majority_cut_off_from_the_leader_ends_its_lease(
    group: RedlockGroup, proxies: list[Proxy], open_backend: Open
) -> None:
    """Two primaries of three blackholed: a renewal cannot reach a majority (LeaseLost), a
    claim is in doubt (BackendUnavailable), and the one copy it left is no claim to a
    lookup after the partition heals."""
    backend = open_backend(group.url([p.port for p in proxies]))
    lease = _acquire(backend, "majority", "r1", ttl=TTL)
    proxies[1].blackhole()
    proxies[2].blackhole()
    with pytest.raises(BackendUnavailable):
        backend.claim(lease, run_for(lease, at(0)), Retention())
    with pytest.raises(LeaseLost):
        backend.renew(lease)
    # Healed after the lease expired everywhere: the held claim requests then land and
    # find no lease (had they landed in time, a majority would hold the claim: in doubt
    # means exactly that).
    assert wait_until(lambda: all(_lease_gone(server, "majority") for server in group), 5.0)
    for proxy in proxies:
        proxy.heal()
    observer = open_backend(group.url())
    assert observer.read("majority") is None
    assert observer.lookup("majority", "job", at(0)) is None
    assert observer.claimed("majority", "job", at(0), at(0)) == {fire_key(at(0))}


# -- a paused leader, a foreign delete, clocks ----------------------------------------------


def test_a_leader_paused_past_its_validity_can_neither_renew_nor_claim(
    group: RedlockGroup, open_backend: Open
) -> None:
    """A leader that makes no call for longer than its TTL (a SIGSTOP, a GC pause) finds a
    successor: its renewal, claim and start are refused on every primary (holder and token
    are checked on each), so nothing it sends after the pause takes effect."""
    paused, successor = open_backend(group.url()), open_backend(group.url())
    lease = _acquire(paused, "paused", "r1", ttl=TTL)
    claimed = paused.claim(lease, run_for(lease, at(0)), Retention())
    assert claimed is not None
    assert wait_until(lambda: successor.try_acquire("paused", Holder.new("r2"), 30.0), 5.0)
    assert SYSTEM_CLOCK.monotonic() > lease.deadline  # its own validity ran out too
    with pytest.raises(LeaseLost):
        paused.renew(lease)
    with pytest.raises(LeaseLost):
        paused.claim(lease, run_for(lease, at(1)), Retention())
    with pytest.raises(LeaseLost):
        paused.start(lease, claimed.started_now(datetime.now(UTC)))
    assert paused.lookup("paused", "job", at(1)) is None


def test_a_foreign_delete_on_one_primary_is_outvoted_on_two_ends_the_lease(
    group: RedlockGroup, open_backend: Open
) -> None:
    """Someone deletes the lease key on one primary: the renewal still has a majority.
    On a second primary too: the renewal raises LeaseLost."""
    backend = open_backend(group.url())
    lease = _acquire(backend, "foreign", "r1")
    for server in group[0], group[1]:
        client = server.client()
        client.delete(lease_keys("foreign")[0])
        client.close()
        if server is group[0]:
            lease = backend.renew(lease)
    with pytest.raises(LeaseLost):
        backend.renew(lease)


class SteppingClock:
    """The system clock, its wall time shifted by ``wall_offset`` and its monotonic time
    moved ``step`` seconds further at every reading (a replica paused between its reads)."""

    def __init__(self, wall_offset: timedelta = timedelta(0), step: float = 0.0) -> None:
        self.wall_offset = wall_offset
        self.step = step
        self._extra = 0.0
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        with self._lock:
            self._extra += self.step
            return time.monotonic() + self._extra

    def now(self) -> datetime:
        return datetime.now(UTC) + self.wall_offset

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(timeout)


def test_wall_clock_jumps_on_a_replica_change_nothing(
    group: RedlockGroup, open_backend: Open
) -> None:
    """A replica whose wall clock is an hour off (either way) acquires, renews and claims
    as usual: validity is measured on the monotonic clock, expiry on each primary's."""
    for offset in (timedelta(hours=1), timedelta(hours=-1)):
        clock = SteppingClock(wall_offset=offset)
        backend = open_backend(group.url(), clock=clock)
        lease = _acquire(backend, f"wall-{offset.total_seconds():+.0f}", "r1", ttl=5.0)
        lease = backend.renew(lease)
        assert backend.claim(lease, run_for(lease, at(0)), Retention()) is not None
        backend.release(lease)


def test_validity_spent_during_the_acquisition_hands_out_nothing(
    group: RedlockGroup, open_backend: Open
) -> None:
    """A replica whose monotonic clock moves past the TTL between sending the lock and
    sealing it (a pause inside the acquisition): no lease, and the locks are given back at
    once, so another replica acquires without waiting for the TTL."""
    slow = open_backend(group.url(), clock=SteppingClock(step=LONG_TTL))
    assert slow.try_acquire("spent", Holder.new("r1"), LONG_TTL) is None
    other = open_backend(group.url())
    assert other.try_acquire("spent", Holder.new("r2"), LONG_TTL) is not None


# -- five primaries --------------------------------------------------------------------------


def test_five_primaries_tolerate_two_down_not_three(open_backend: Open) -> None:
    """N = 5: with two primaries killed a majority (3) still grants, renews and claims;
    with a third gone nothing can be acquired."""
    with _own_group(5) as group:
        backend = open_backend(group.url())
        group[0].kill()
        group[1].kill()
        lease = _acquire(backend, "five", "r1", ttl=TTL)
        lease = backend.renew(lease)
        assert backend.claim(lease, run_for(lease, at(0)), Retention()) is not None
        backend.release(lease)
        group[2].kill()
        with pytest.raises(BackendUnavailable):
            backend.try_acquire("five", Holder.new("r2"), TTL)


# -- stray claim records ---------------------------------------------------------------------


def test_a_claim_refused_by_a_majority_leaves_no_stray_copy(
    group: RedlockGroup, open_backend: Open
) -> None:
    """A fire claimed on two primaries of three (the third missed it): a later claim of it
    succeeds only on the third, which is no majority, so it answers None and deletes the
    copy it wrote there; a lookup still finds the first claim (two copies)."""
    backend = open_backend(group.url())
    lease = _acquire(backend, "stray", "r1")
    first = run_for(lease, at(0))
    assert backend.claim(lease, first, Retention()) == first
    runs_key, index_key = run_keys("stray", "job")
    client = group[2].client()
    client.hdel(runs_key, str(first.key))  # the third primary never got it
    client.zrem(index_key, str(first.key))
    second = run_for(lease, at(0))
    assert backend.claim(lease, second, Retention()) is None
    assert client.hget(runs_key, str(first.key)) is None  # the stray copy was withdrawn
    client.close()
    assert backend.lookup("stray", "job", at(0)) == first
