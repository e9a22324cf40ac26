"""The LeaseBackend contract, run against every backend kind on a real server.

One suite for all backends (see ``BACKEND_KINDS`` in ``tests/conftest.py``); nothing here may
depend on how a backend stores things. Timing tests wait on conditions with a timeout and
assert generous upper bounds: they check correctness, not speed.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.backends import LeaseBackend
from scheduler.errors import ClaimLost, LeaseLost
from scheduler.firing.runs import Outcome, Retention, RunRecord, fire_key, new_attempt_id
from scheduler.leadership.lease import Holder, Lease, local_deadline

MakeBackend = Callable[..., LeaseBackend]
#: The ``expire_lease`` fixture: make the server expire the lease a backend holds, and wait.
ExpireLease = Callable[[LeaseBackend, str], None]

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LONG_TTL = 30.0
SHORT_TTL = 0.3


def holder(replica: str) -> Holder:
    return Holder.new(replica, host=f"host-{replica}")


def at(seconds: float) -> datetime:
    return BASE + timedelta(seconds=seconds)


def run_for(lease: Lease, when: datetime, job: str = "job") -> RunRecord:
    return RunRecord(
        job=job,
        scheduled_time=when,
        replica_id=lease.holder.replica_id,
        token=lease.token,
        started=datetime.now(UTC),
    )


def finished(run: RunRecord, outcome: Outcome = "ok") -> RunRecord:
    """``run`` as ended now with ``outcome``."""
    return run.finished(outcome, datetime.now(UTC))


def claim_finished(
    backend: LeaseBackend, lease: Lease, when: datetime, retention: Retention
) -> RunRecord:
    """Claim the fire at ``when`` and finish it ``ok`` at once; the finished record."""
    run = backend.claim(lease, run_for(lease, when), retention)
    assert run is not None
    done = finished(run)
    backend.finish(lease.name, done)
    return done


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def acquire(backend: LeaseBackend, name: str, who: Holder, ttl: float = LONG_TTL) -> Lease:
    lease = backend.try_acquire(name, who, ttl)
    assert lease is not None, f"{who.replica_id} could not acquire a free lease"
    return lease


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


# --- claim ---------------------------------------------------------------------------------


def test_claim_is_once_per_fire(make_backend: MakeBackend, election: str) -> None:
    """A fire is claimed once: a second claim, even by a later leader, returns None."""
    first, second = make_backend(), make_backend()
    lease = acquire(first, election, holder("r1"))
    run = run_for(lease, at(0))

    assert first.claim(lease, run, Retention()) == run
    assert first.claim(lease, run_for(lease, at(0)), Retention()) is None

    first.release(lease)
    successor = acquire(second, election, holder("r2"))
    assert second.claim(successor, run_for(successor, at(0)), Retention()) is None
    later = run_for(successor, at(60))
    assert second.claim(successor, later, Retention()) == later
    assert first.claim(successor, run_for(successor, at(0), job="other"), Retention()) is not None


def test_claim_after_release_raises_lease_lost(make_backend: MakeBackend, election: str) -> None:
    """Claiming with a released lease raises LeaseLost and stores nothing."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    backend.release(lease)

    with pytest.raises(LeaseLost):
        backend.claim(lease, run_for(lease, at(0)), Retention())
    assert backend.claimed(election, "job", at(-1), at(1)) == set()


def test_claim_after_expiry_raises_lease_lost(
    make_backend: MakeBackend, election: str, expire_lease: ExpireLease
) -> None:
    """Claiming with an expired lease raises LeaseLost."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"), ttl=SHORT_TTL)
    expire_lease(backend, election)

    with pytest.raises(LeaseLost):
        backend.claim(lease, run_for(lease, at(0)), Retention())


def test_claim_with_stale_token_raises_lease_lost(
    make_backend: MakeBackend, election: str, expire_lease: ExpireLease
) -> None:
    """Same holder, older acquisition: the stale token is refused, the current one works."""
    backend = make_backend()
    who = holder("r1")
    stale = acquire(backend, election, who, ttl=SHORT_TTL)
    expire_lease(backend, election)
    current = acquire(backend, election, who)

    with pytest.raises(LeaseLost):
        backend.claim(stale, run_for(stale, at(0)), Retention())
    assert backend.claim(current, run_for(current, at(0)), Retention()) is not None


def test_claim_by_non_holder_raises_lease_lost(make_backend: MakeBackend, election: str) -> None:
    """A lease held by someone else cannot be used to claim, even with its token."""
    backend, intruder = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    forged = replace(lease, holder=holder("r2"))

    with pytest.raises(LeaseLost):
        intruder.claim(forged, run_for(forged, at(0)), Retention())
    assert backend.claimed(election, "job", at(-1), at(1)) == set()


def test_claim_checks_lease_before_duplicate(make_backend: MakeBackend, election: str) -> None:
    """A lost lease raises LeaseLost even for a fire already claimed (not None)."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    assert backend.claim(lease, run_for(lease, at(0)), Retention()) is not None
    backend.release(lease)

    with pytest.raises(LeaseLost):
        backend.claim(lease, run_for(lease, at(0)), Retention())


def test_claim_resent_with_the_same_attempt_returns_the_stored_record(
    make_backend: MakeBackend, election: str
) -> None:
    """A claim sent again by the same attempt gets that attempt's stored record (also once
    started); another attempt at the same fire gets None."""
    backend, other = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    run = run_for(lease, at(0))
    assert backend.claim(lease, run, Retention()) == run

    resent = replace(run, started=datetime.now(UTC) + timedelta(seconds=1))
    assert other.claim(lease, resent, Retention()) == run
    assert backend.claim(lease, run_for(lease, at(0)), Retention()) is None

    running = backend.start(lease, run.started_now(datetime.now(UTC)))
    assert other.claim(lease, run, Retention()) == running
    assert backend.lookup(election, "job", at(0)) == running


def test_claim_start_finish_moves_claimed_running_ok(
    make_backend: MakeBackend, election: str
) -> None:
    """A fire's record goes claimed → running → ok, each state stored as returned."""
    backend, reader = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    claimed = backend.claim(lease, run_for(lease, at(0)), Retention())
    assert claimed is not None and claimed.outcome == "claimed" and claimed.ended is None
    assert reader.lookup(election, "job", at(0)) == claimed

    started_at = datetime.now(UTC)
    running = backend.start(lease, claimed.started_now(started_at))
    assert (running.outcome, running.started, running.attempt) == (
        "running",
        started_at,
        claimed.attempt,
    )
    assert reader.lookup(election, "job", at(0)) == running

    done = finished(running)
    backend.finish(election, done)
    assert reader.lookup(election, "job", at(0)) == done
    assert reader.history(election, "job", 10) == [done]


def test_start_after_the_lease_is_lost_raises_lease_lost(
    make_backend: MakeBackend, election: str
) -> None:
    """start() is fenced like claim(): after release, and after a takeover, it raises
    LeaseLost and the record stays claimed."""
    backend, successor_backend = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    run = backend.claim(lease, run_for(lease, at(0)), Retention())
    assert run is not None
    backend.release(lease)

    with pytest.raises(LeaseLost) as caught:
        backend.start(lease, run.started_now(datetime.now(UTC)))
    assert caught.value.name == election
    successor = acquire(successor_backend, election, holder("r2"))
    with pytest.raises(LeaseLost):
        backend.start(lease, run.started_now(datetime.now(UTC)))
    with pytest.raises(LeaseLost):  # the successor's backend has no such lease either
        successor_backend.start(lease, run.started_now(datetime.now(UTC)))
    assert successor_backend.lookup(election, "job", at(0)) == run
    # The record is not the successor's to start either: it is another attempt's claim.
    with pytest.raises(ClaimLost):
        successor_backend.start(
            successor, replace(run, attempt=new_attempt_id()).started_now(datetime.now(UTC))
        )
    assert successor_backend.lookup(election, "job", at(0)) == run


def test_start_acts_only_on_its_own_claimed_record(
    make_backend: MakeBackend, election: str
) -> None:
    """start() of another attempt's record raises ClaimLost, and so does a second start."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    run = backend.claim(lease, run_for(lease, at(0)), Retention())
    assert run is not None

    other = replace(run, attempt=new_attempt_id()).started_now(datetime.now(UTC))
    with pytest.raises(ClaimLost) as caught:
        backend.start(lease, other)
    assert (caught.value.job, caught.value.reason) == ("job", "other-attempt")
    assert caught.value.scheduled_time == at(0).isoformat()
    assert backend.lookup(election, "job", at(0)) == run

    running = backend.start(lease, run.started_now(datetime.now(UTC)))
    with pytest.raises(ClaimLost) as caught:
        backend.start(lease, run.started_now(datetime.now(UTC)))
    assert caught.value.reason == "not-claimed"
    backend.finish(election, finished(running))
    with pytest.raises(ClaimLost) as caught:
        backend.start(lease, run.started_now(datetime.now(UTC)))
    assert caught.value.reason == "not-claimed"
    with pytest.raises(ClaimLost) as caught:
        backend.start(lease, run_for(lease, at(60)).started_now(datetime.now(UTC)))
    assert caught.value.reason == "gone"


def test_start_checks_lease_before_the_record(make_backend: MakeBackend, election: str) -> None:
    """A lost lease raises LeaseLost even when the record would also refuse the start."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    backend.release(lease)

    with pytest.raises(LeaseLost):
        backend.start(lease, run_for(lease, at(0)).started_now(datetime.now(UTC)))


def test_unclaim_refuses_a_started_record(make_backend: MakeBackend, election: str) -> None:
    """A withdrawal racing a start: if the start lands first, unclaim() returns False and
    the running record stays; if the unclaim lands first, the start raises ClaimLost."""
    backend, withdrawer = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))

    run = backend.claim(lease, run_for(lease, at(0)), Retention())
    assert run is not None
    running = backend.start(lease, run.started_now(datetime.now(UTC)))
    assert not withdrawer.unclaim(election, run)
    assert backend.lookup(election, "job", at(0)) == running
    done = finished(running, "error")
    backend.finish(election, done)
    assert not withdrawer.unclaim(election, run)
    assert backend.lookup(election, "job", at(0)) == done

    other = backend.claim(lease, run_for(lease, at(60)), Retention())
    assert other is not None
    assert withdrawer.unclaim(election, other)
    with pytest.raises(ClaimLost) as caught:
        backend.start(lease, other.started_now(datetime.now(UTC)))
    assert caught.value.reason == "gone"
    assert backend.lookup(election, "job", at(60)) is None


def test_withdrawal_of_a_second_attempt_spares_the_first_that_ran(
    make_backend: MakeBackend, election: str
) -> None:
    """A withdrawal of a second attempt when a first attempt of the same token ran: the
    second claim is refused, and its unclaim leaves the first attempt's ``ok`` record."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    first = backend.claim(lease, run_for(lease, at(0)), Retention())
    assert first is not None
    done = finished(backend.start(lease, first.started_now(datetime.now(UTC))))
    backend.finish(election, done)

    second = run_for(lease, at(0))
    assert second.token == first.token and second.attempt != first.attempt
    assert backend.claim(lease, second, Retention()) is None
    assert not backend.unclaim(election, second)
    stored = backend.lookup(election, "job", at(0))
    assert stored == done and stored.outcome == "ok"
    assert backend.claimed(election, "job", at(0), at(0)) == {fire_key(at(0))}


# --- finish / history / claimed --------------------------------------------------------------


def test_finish_records_outcome_for_its_own_attempt_only(
    make_backend: MakeBackend, election: str
) -> None:
    """finish() needs no lease and updates only the record its own attempt wrote: another
    attempt's finish is a no-op, even with the same token."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    run = backend.claim(lease, run_for(lease, at(0)), Retention())
    assert run is not None

    impostor = replace(run, attempt=new_attempt_id()).finished("error", datetime.now(UTC), "boom")
    backend.finish(election, impostor)
    backend.finish(election, replace(impostor, attempt=""))
    [stored] = backend.history(election, "job", 10)
    assert stored == run
    assert (stored.outcome, stored.token) == ("claimed", run.token)

    backend.release(lease)
    done = run.finished("ok", datetime.now(UTC))
    backend.finish(election, done)
    [stored] = backend.history(election, "job", 10)
    assert stored == done

    backend.finish(election, run_for(lease, at(60)).finished("ok", datetime.now(UTC)))
    assert [r.key for r in backend.history(election, "job", 10)] == [run.key]


def test_lookup_returns_the_record_of_one_fire(make_backend: MakeBackend, election: str) -> None:
    """lookup() finds the record of exactly that (job, fire), with its latest outcome."""
    backend, reader = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    run = backend.claim(lease, run_for(lease, at(0)), Retention())
    assert run is not None

    assert reader.lookup(election, "job", at(0)) == run
    assert reader.lookup(election, "job", at(1)) is None
    assert reader.lookup(election, "other", at(0)) is None
    done = run.finished("ok", datetime.now(UTC))
    backend.finish(election, done)
    assert reader.lookup(election, "job", at(0)) == done


def test_unclaim_frees_the_fire_for_its_own_attempt_only(
    make_backend: MakeBackend, election: str
) -> None:
    """unclaim() needs no lease, deletes only its own attempt's ``claimed`` record, and the
    fire can be claimed again (by the next leader) afterwards."""
    first, second = make_backend(), make_backend()
    lease = acquire(first, election, holder("r1"))
    run = first.claim(lease, run_for(lease, at(0)), Retention())
    assert run is not None
    assert first.claim(lease, run_for(lease, at(10)), Retention()) is not None
    first.release(lease)
    successor = acquire(second, election, holder("r2"))

    # Same fire, same token, another attempt: not its record to give back.
    assert not first.unclaim(election, replace(run, attempt=new_attempt_id()))
    assert not first.unclaim(election, replace(run, attempt=""))
    assert first.lookup(election, "job", at(0)) == run
    assert first.unclaim(election, run)
    assert not first.unclaim(election, run)  # gone: safe twice
    assert first.lookup(election, "job", at(0)) is None
    assert second.claimed(election, "job", at(-1), at(20)) == {fire_key(at(10))}
    assert [r.key for r in second.history(election, "job", 10)] == [fire_key(at(10))]

    again = run_for(successor, at(0))
    assert second.claim(successor, again, Retention()) == again
    assert not first.unclaim(election, run)  # now the successor's record
    assert second.lookup(election, "job", at(0)) == again


def test_history_is_newest_first_and_limited(make_backend: MakeBackend, election: str) -> None:
    """history() returns the newest fires first, at most ``limit``, for that job only."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    offsets = [30, 0, 50, 10, 40, 20]
    random.Random(7).shuffle(offsets)
    for offset in offsets:
        assert backend.claim(lease, run_for(lease, at(offset)), Retention()) is not None
    backend.claim(lease, run_for(lease, at(99), job="other"), Retention())

    newest = backend.history(election, "job", 3)
    assert [r.scheduled_time for r in newest] == [at(50), at(40), at(30)]
    assert [r.key for r in backend.history(election, "job", 100)] == [
        fire_key(at(s)) for s in (50, 40, 30, 20, 10, 0)
    ]
    assert backend.history(election, "missing", 10) == []
    assert newest[0].replica_id == "r1" and newest[0].token == lease.token


def test_retention_trims_to_limit(make_backend: MakeBackend, election: str) -> None:
    """With nothing protected, a job keeps exactly its newest ``limit`` (finished) runs."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    retention = Retention(limit=3, protect=0.0)
    for minute in range(8):
        claim_finished(backend, lease, at(minute * 60), retention)

    kept = [fire_key(at(m * 60)) for m in (7, 6, 5)]
    assert [r.key for r in backend.history(election, "job", 100)] == kept
    assert backend.claimed(election, "job", at(-3600), at(3600)) == set(kept)


def test_retention_never_trims_protected_fires(make_backend: MakeBackend, election: str) -> None:
    """Fires within ``protect`` seconds before the newest claimed fire survive any limit."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    retention = Retention(limit=2, protect=4.5)
    for second in range(8):
        claim_finished(backend, lease, at(second), retention)

    # Fires 3..7 are within 4.5 s of fire 7; 0..2 are older and over the limit.
    expected = {fire_key(at(s)) for s in range(3, 8)}
    assert backend.claimed(election, "job", at(-60), at(60)) == expected
    assert len(backend.history(election, "job", 100)) == 5


def test_retention_never_trims_unfinished_records(make_backend: MakeBackend, election: str) -> None:
    """Trimming deletes only finished records: the oldest fires, left claimed or running,
    survive any limit while the finished ones after them are trimmed."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    retention = Retention(limit=2, protect=0.0)
    claimed = backend.claim(lease, run_for(lease, at(0)), retention)
    running = backend.claim(lease, run_for(lease, at(1)), retention)
    assert claimed is not None and running is not None
    running = backend.start(lease, running.started_now(datetime.now(UTC)))
    for second in range(2, 8):
        claim_finished(backend, lease, at(second), retention)

    # Over the limit: every finished fire but the newest two went; the unfinished stayed.
    assert [r.key for r in backend.history(election, "job", 100)] == [
        fire_key(at(s)) for s in (7, 6, 1, 0)
    ]
    assert backend.lookup(election, "job", at(0)) == claimed
    assert backend.lookup(election, "job", at(1)) == running
    # Once finished they are trimmed like any other.
    backend.finish(election, finished(claimed, "lost"))
    backend.finish(election, finished(running))
    claim_finished(backend, lease, at(8), retention)
    assert [r.key for r in backend.history(election, "job", 100)] == [
        fire_key(at(s)) for s in (8, 7)
    ]


def test_claimed_returns_exact_keys_in_range(make_backend: MakeBackend, election: str) -> None:
    """claimed() returns the claimed fire keys in [since, until], both ends included."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    for offset in (0, 10, 20, 30, 40):
        backend.claim(lease, run_for(lease, at(offset)), Retention())
    backend.claim(lease, run_for(lease, at(20), job="other"), Retention())

    assert backend.claimed(election, "job", at(10), at(30)) == {
        fire_key(at(10)),
        fire_key(at(20)),
        fire_key(at(30)),
    }
    assert backend.claimed(election, "job", at(11), at(19)) == set()
    assert backend.claimed(election, "job", at(-100), at(100)) == {
        fire_key(at(s)) for s in (0, 10, 20, 30, 40)
    }
    assert backend.claimed(election, "missing", at(-100), at(100)) == set()


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


# --- fuzz ------------------------------------------------------------------------------------


def test_concurrent_holders_never_overlap(make_backend: MakeBackend, election: str) -> None:
    """Racing holders (a backend each) never lose a counter update nor claim a fire twice."""
    threads_n, target = 4, 40
    backends = [make_backend() for _ in range(threads_n)]
    shared = {"counter": 0}
    claimed_keys: list[int] = []
    duplicates: list[int] = []
    increments = [0] * threads_n
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)
    deadline = time.monotonic() + 30.0

    def worker(index: int) -> None:
        backend, who = backends[index], holder(f"fuzz{index}")
        try:
            start.wait()
            while shared["counter"] < target and time.monotonic() < deadline:
                lease = backend.try_acquire(election, who, 5.0)
                if lease is None:
                    backend.wait_for_change(election, 0.05)
                    continue
                try:
                    value = shared["counter"]
                    if value >= target:
                        continue
                    run = run_for(lease, at(value), job="fuzz")
                    if backend.claim(lease, run, Retention(limit=1000)) is None:
                        duplicates.append(run.key)
                        continue
                    claimed_keys.append(run.key)
                    time.sleep(0.002)  # widen the read-modify-write window a lost lease would hit
                    shared["counter"] = value + 1
                    increments[index] += 1
                finally:
                    backend.release(lease)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40.0)

    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "a fuzz worker hung"
    assert not duplicates, f"fires claimed twice: {duplicates}"
    assert shared["counter"] == sum(increments) == target
    assert len(claimed_keys) == len(set(claimed_keys)) == target
    assert backends[0].claimed(election, "fuzz", at(0), at(target)) == set(claimed_keys)
