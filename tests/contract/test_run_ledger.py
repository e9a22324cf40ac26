"""Contract: the run ledger (claim, start, finish, unclaim, lookup, history, claimed, the
batch forms, trimming) on every backend kind (``BACKEND_KINDS`` in ``tests/conftest.py``).

Nothing here may depend on how a backend stores things; trimming is checked against the one
rule of :mod:`scheduler.backends.rules`.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.backends.rules import select_trim
from scheduler.backends.runs import UNFINISHED, Retention, RunRecord, fire_key, new_attempt_id
from scheduler.errors import ClaimLost, LeaseLost
from tests.contract.support import (
    SHORT_TTL,
    ExpireLease,
    MakeBackend,
    acquire,
    at,
    claim_finished,
    finished,
    holder,
    run_for,
)

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


# --- batches ---------------------------------------------------------------------------------


def test_claim_many_answers_as_claims_one_by_one(make_backend: MakeBackend, election: str) -> None:
    """A batch answers each run as claim() would in order: new fires are claimed, a second
    attempt at a fire gets None, a resend of an attempt gets its record."""
    backend, reader = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    earlier = backend.claim(lease, run_for(lease, at(-60)), Retention())
    assert earlier is not None
    first, second = run_for(lease, at(0)), run_for(lease, at(60), job="other")
    rival = run_for(lease, at(0))

    answers = backend.claim_many(lease, [first, second, rival, second, earlier], Retention())

    assert answers == [first, second, None, second, earlier]
    assert reader.lookup(election, "job", at(0)) == first
    assert reader.lookup(election, "other", at(60)) == second
    assert backend.claim_many(lease, [], Retention()) == []


def test_claim_many_with_a_lost_lease_raises_and_claims_nothing_new(
    make_backend: MakeBackend, election: str
) -> None:
    """A batch under a released lease raises LeaseLost at its first run: nothing is stored.
    An empty batch answers [] without looking at the lease."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    backend.release(lease)

    with pytest.raises(LeaseLost):
        backend.claim_many(lease, [run_for(lease, at(s)) for s in (0, 10)], Retention())
    assert backend.claimed(election, "job", at(-60), at(60)) == set()
    assert backend.claim_many(lease, [], Retention()) == []  # nothing to claim: no check


def test_claim_many_trims_like_single_claims(make_backend: MakeBackend, election: str) -> None:
    """A batch trims the finished history by the same rule as one claim after another."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    retention = Retention(limit=2, protect=0.0)
    for second in range(4):
        claim_finished(backend, lease, at(second), retention)

    answers = backend.claim_many(lease, [run_for(lease, at(s)) for s in (10, 11)], retention)

    assert None not in answers
    # Each claim trims up to the limit: the finished fires go, the two new (claimed) stay.
    assert backend.claimed(election, "job", at(-60), at(60)) == {fire_key(at(s)) for s in (10, 11)}


def test_finish_many_stores_each_outcome_of_its_own_attempt(
    make_backend: MakeBackend, election: str
) -> None:
    """A batch of outcomes stores each over its own attempt's record; another attempt's
    outcome (or one for a fire with no record) changes nothing, as with finish()."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    runs = backend.claim_many(lease, [run_for(lease, at(s)) for s in (0, 10, 20)], Retention())
    assert None not in runs
    first, second, third = (run for run in runs if run is not None)
    impostor = replace(second, attempt=new_attempt_id())
    backend.release(lease)  # outcomes need no lease

    done = finished(first)
    backend.finish_many(
        election,
        [
            done,
            finished(impostor, "error"),
            finished(third, "lost"),
            finished(run_for(lease, at(30))),
        ],
    )
    backend.finish_many(election, [])

    assert backend.lookup(election, "job", at(0)) == done
    assert backend.lookup(election, "job", at(10)) == second
    stored = backend.lookup(election, "job", at(20))
    assert stored is not None and stored.outcome == "lost"
    assert backend.lookup(election, "job", at(30)) is None


# --- the trim rule ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_trimming_follows_the_shared_rule(
    make_backend: MakeBackend, election: str, seed: int
) -> None:
    """After every claim (fires out of order, retention changing, records left claimed or
    running or finished later), the history is what select_trim() says it must be."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    rng = random.Random(seed)
    model: dict[int, str] = {}  # fire key -> outcome, as the rule sees the job's records
    stored: dict[int, RunRecord] = {}
    for _ in range(50):
        retention = Retention(limit=rng.choice([0, 1, 2, 3, 5]), protect=rng.choice([0, 2.5, 9]))
        run = run_for(lease, at(rng.randrange(40)))
        if run.key in model:
            assert backend.claim(lease, run, retention) is None  # another attempt: no trim
        else:
            victims = select_trim(model, run.key, retention, scan=None)
            assert backend.claim(lease, run, retention) == run
            for key in victims:
                del model[key], stored[key]
            model[run.key], stored[run.key] = run.outcome, run
            if rng.random() < 0.5:
                stored[run.key] = backend.start(lease, run.started_now(datetime.now(UTC)))
                model[run.key] = "running"
        unfinished = sorted(key for key, outcome in model.items() if outcome in UNFINISHED)
        if unfinished and rng.random() < 0.6:
            key = rng.choice(unfinished)
            outcome = rng.choice(["ok", "error", "lost"])
            backend.finish(election, stored[key].finished(outcome, datetime.now(UTC)))
            model[key] = outcome
        assert backend.claimed(election, "job", at(-1), at(41)) == set(model)
    assert len(model) < 40, "the history never needed trimming: the test proves nothing"
