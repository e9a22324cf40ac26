"""Contract: the lease store (acquire, renew, release, read, wait_for_change) and the
optional loss notifier, on every backend kind (``BACKEND_KINDS`` in ``tests/conftest.py``).

Nothing here may depend on how a backend stores things. Timing tests wait on conditions with
a timeout and assert generous upper bounds: they check correctness, not speed.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.backends.base import LeaseNotifier, watch_lease
from scheduler.backends.runs import Retention
from scheduler.backends.states import LossReason
from scheduler.errors import LeaseLost
from scheduler.leadership.lease import local_deadline
from tests.contract.support import (
    LONG_TTL,
    SHORT_TTL,
    ExpireLease,
    MakeBackend,
    acquire,
    at,
    holder,
    run_for,
    wait_until,
)

# --- acquire / read -----------------------------------------------------------------------


def test_acquire_returns_lease_and_read_shows_holder(
    make_backend: MakeBackend, election: str
) -> None:
    """A free lease is acquired with a future deadline, and read() shows who holds it."""
    backend = make_backend()
    who = holder("r1")
    before = time.monotonic()
    lease = acquire(backend, election, who, ttl=10.0)
    after = time.monotonic()

    assert (lease.name, lease.holder, lease.ttl) == (election, who, 10.0)
    assert before <= lease.sent_at <= after
    assert lease.deadline == local_deadline(lease.sent_at, 10.0)
    assert lease.deadline > time.monotonic()

    record = backend.read(election)
    assert record is not None
    assert (record.name, record.replica_id, record.host) == (election, "r1", "host-r1")
    assert record.token == lease.token
    assert record.ttl_left is None or 0 < record.ttl_left <= 10.0
    assert abs(record.since - datetime.now(UTC)) < timedelta(minutes=1)


def test_read_free_lease_returns_none(make_backend: MakeBackend, election: str) -> None:
    """read() of a lease nobody ever took is None."""
    assert make_backend().read(election) is None


def test_contention_returns_none(make_backend: MakeBackend, election: str) -> None:
    """A held lease cannot be acquired by another holder; the answer is None, not an error."""
    first, second = make_backend(), make_backend()
    lease = acquire(first, election, holder("r1"))

    assert second.try_acquire(election, holder("r2"), LONG_TTL) is None
    assert first.try_acquire(election, holder("r3"), LONG_TTL) is None
    record = second.read(election)
    assert record is not None
    assert (record.replica_id, record.token) == ("r1", lease.token)


def test_leases_of_different_names_are_independent(
    make_backend: MakeBackend, election: str
) -> None:
    """Holding one election name does not block another."""
    backend = make_backend()
    acquire(backend, election, holder("r1"))
    acquire(backend, f"{election}-other", holder("r2"))


# --- renew ---------------------------------------------------------------------------------


def test_renew_extends_and_keeps_token(make_backend: MakeBackend, election: str) -> None:
    """Renewals keep the token and push the expiry out: renewed past its TTL, it is still ours."""
    backend, other = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"), ttl=0.6)
    first = lease
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        renewed = backend.renew(lease)
        assert renewed.token == first.token
        assert renewed.holder == first.holder
        assert renewed.sent_at >= lease.sent_at
        assert renewed.deadline == local_deadline(renewed.sent_at, 0.6)
        lease = renewed
        time.sleep(0.1)  # the renewal cadence, well inside the 0.6 s TTL

    assert lease.deadline > first.deadline
    record = other.read(election)
    assert record is not None and record.token == first.token
    assert other.try_acquire(election, holder("r2"), LONG_TTL) is None


def test_renew_after_expiry_raises_lease_lost(
    make_backend: MakeBackend, election: str, expire_lease: ExpireLease
) -> None:
    """Once the server expired a lease, renewing it raises LeaseLost naming the lease."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"), ttl=SHORT_TTL)
    expire_lease(backend, election)

    with pytest.raises(LeaseLost) as caught:
        backend.renew(lease)
    assert caught.value.name == election
    assert backend.read(election) is None


def test_renew_after_takeover_raises_and_spares_new_holder(
    make_backend: MakeBackend, election: str, expire_lease: ExpireLease
) -> None:
    """A lease taken over after expiry cannot be renewed by the old holder; the new one can."""
    old_backend, new_backend = make_backend(), make_backend()
    old = acquire(old_backend, election, holder("r1"), ttl=SHORT_TTL)
    expire_lease(old_backend, election)
    new = acquire(new_backend, election, holder("r2"))

    with pytest.raises(LeaseLost):
        old_backend.renew(old)
    assert new_backend.renew(new).token == new.token
    record = old_backend.read(election)
    assert record is not None and record.replica_id == "r2"


def test_renew_after_release_raises_lease_lost(make_backend: MakeBackend, election: str) -> None:
    """A released lease cannot be renewed back to life."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    backend.release(lease)
    with pytest.raises(LeaseLost):
        backend.renew(lease)
    assert backend.read(election) is None


# --- release -------------------------------------------------------------------------------


def test_release_is_owner_only(make_backend: MakeBackend, election: str) -> None:
    """A lease presented by another holder (even with the right token) releases nothing."""
    backend, intruder = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    forged = replace(lease, holder=holder("r2"))

    intruder.release(forged)

    record = intruder.read(election)
    assert record is not None and record.token == lease.token
    assert backend.renew(lease).token == lease.token


def test_release_is_idempotent(make_backend: MakeBackend, election: str) -> None:
    """Releasing twice is a silent no-op, also after someone else took the lease."""
    backend, other = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    backend.release(lease)
    backend.release(lease)
    assert backend.read(election) is None

    taken = acquire(other, election, holder("r2"))
    backend.release(lease)
    record = other.read(election)
    assert record is not None and record.token == taken.token


def test_after_release_another_holder_acquires(make_backend: MakeBackend, election: str) -> None:
    """Release frees the lease at once: another holder acquires it with a higher token."""
    first, second = make_backend(), make_backend()
    lease = acquire(first, election, holder("r1"))
    first.release(lease)

    taken = acquire(second, election, holder("r2"))
    assert taken.token > lease.token
    record = first.read(election)
    assert record is not None and (record.replica_id, record.token) == ("r2", taken.token)


def test_tokens_strictly_increase(make_backend: MakeBackend, election: str) -> None:
    """Every acquisition, by any holder through any backend instance, gets a larger token."""
    backends = [make_backend(), make_backend(), make_backend()]
    holders = [holder(f"r{i}") for i in range(3)]
    tokens: list[int] = []
    for i in range(24):
        backend = backends[i % 3]
        lease = acquire(backend, election, holders[(i * 7) % 3])
        tokens.append(lease.token)
        backend.release(lease)
    assert all(a < b for a, b in itertools.pairwise(tokens)), tokens


def test_token_increases_after_expiry(
    make_backend: MakeBackend, election: str, expire_lease: ExpireLease
) -> None:
    """A lease that expired (never released) is re-acquired with a larger token."""
    backend = make_backend()
    who = holder("r1")
    first = acquire(backend, election, who, ttl=SHORT_TTL)
    expire_lease(backend, election)
    second = acquire(backend, election, who)
    assert second.token > first.token


# --- wait_for_change -------------------------------------------------------------------------


def test_wait_for_change_returns_promptly_on_release(
    make_backend: MakeBackend, election: str
) -> None:
    """A follower waiting with a 10 s timeout wakes within 2 s of the holder's release."""
    leader, follower = make_backend(), make_backend()
    returned = threading.Event()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            follower.wait_for_change(election, 10.0)
        except BaseException as exc:
            errors.append(exc)
        finally:
            returned.set()

    lease = acquire(leader, election, holder("r1"))
    waiter = threading.Thread(target=wait, daemon=True)
    started = time.monotonic()
    waiter.start()
    # The waiter may not be listening yet when a release happens, so keep handing the lease
    # over until it wakes; without wake-ups it would sleep its full 10 s.
    while not returned.is_set() and time.monotonic() - started < 2.0:
        leader.release(lease)
        returned.wait(0.1)
        if not returned.is_set():
            lease = acquire(leader, election, holder("r1"))
    elapsed = time.monotonic() - started
    waiter.join(timeout=15.0)

    assert not errors, errors
    assert returned.is_set() and elapsed < 2.0, f"waiter woke after {elapsed:.2f} s"


def test_wait_for_change_waits_when_nothing_changes(
    make_backend: MakeBackend, election: str
) -> None:
    """With no release, wait_for_change blocks for about its timeout (no spinning, no hang)."""
    leader, follower = make_backend(), make_backend()
    acquire(leader, election, holder("r1"))
    started = time.monotonic()
    follower.wait_for_change(election, 0.5)
    elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 1.5, f"waited {elapsed:.2f} s for a 0.5 s timeout"


# --- shared rules: TTLs, loss reasons, the optional notifier ---------------------------------


@pytest.mark.parametrize("ttl", [0.0, -1.0, math.nan])
def test_unusable_ttl_is_refused_with_value_error(
    make_backend: MakeBackend, election: str, ttl: float
) -> None:
    """An acquire with a TTL that is not a positive number fails before taking anything."""
    backend = make_backend()
    with pytest.raises(ValueError):
        backend.try_acquire(election, holder("r1"), ttl)
    assert backend.read(election) is None


def test_lease_lost_reasons_are_loss_reasons(
    make_backend: MakeBackend, election: str, expire_lease: ExpireLease
) -> None:
    """Every LeaseLost a backend raises names a LossReason (bounded metric labels): after a
    release, for a forged holder, after an expiry, and from start() as from renew()."""
    backend, intruder = make_backend(), make_backend()
    reasons: list[str] = []

    released = acquire(backend, election, holder("r1"))
    run = backend.claim(released, run_for(released, at(0)), Retention())
    assert run is not None
    backend.release(released)
    for act in (
        lambda: backend.renew(released),
        lambda: backend.claim(released, run_for(released, at(1)), Retention()),
        lambda: backend.start(released, run.started_now(datetime.now(UTC))),
    ):
        with pytest.raises(LeaseLost) as caught:
            act()
        reasons.append(caught.value.reason)

    held = acquire(backend, election, holder("r2"), ttl=SHORT_TTL)
    with pytest.raises(LeaseLost) as caught:
        intruder.claim(replace(held, holder=holder("r3")), run_for(held, at(2)), Retention())
    reasons.append(caught.value.reason)
    expire_lease(backend, election)
    with pytest.raises(LeaseLost) as caught:
        backend.renew(held)
    reasons.append(caught.value.reason)

    assert all(reason in set(LossReason) for reason in reasons), reasons
    assert not any(LossReason(reason).voluntary for reason in reasons), reasons


def test_watch_lease_says_whether_the_backend_notifies(
    make_backend: MakeBackend, election: str, expire_lease: ExpireLease
) -> None:
    """watch_lease() watches exactly when the backend is a LeaseNotifier; a notifier then
    reports the server-side loss once, with a LossReason."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"), ttl=SHORT_TTL)
    lost: list[str] = []
    watching = watch_lease(backend, lease, lost.append)
    assert watching is isinstance(backend, LeaseNotifier)
    if not watching:
        return
    expire_lease(backend, election)
    assert wait_until(lambda: bool(lost), 5.0), "the notifier never reported the loss"
    assert len(lost) == 1 and lost[0] in set(LossReason)
