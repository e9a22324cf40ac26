"""Contract: the run ledger's batches (``claim_many``, ``start_many``, ``finish_many``,
``history_many``) keep every per-fire rule of the single calls, on every backend kind.

The strongest check is :func:`test_a_batch_answers_and_stores_what_single_calls_would`: one
random script of operations played on two clusters of the same backend, as batches on one
and one call at a time on the other, must answer alike and leave the same history. The
others pin the cases the scale issue names (some fires already claimed, a fire twice in a
batch, a batch after the lease is lost, a batch that landed but whose answer was lost, a
start refused for one run only) and a batch larger than one request may carry.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from scheduler.backends import Backend
from scheduler.backends.base import BatchDefaults, StartAnswer
from scheduler.backends.runs import Retention, RunRecord, fire_key, new_attempt_id
from scheduler.errors import ClaimLost, LeaseLost
from scheduler.leadership.lease import Lease
from tests.contract.support import (
    SHORT_TTL,
    ExpireLease,
    MakeBackend,
    acquire,
    at,
    finished,
    holder,
    run_for,
)

# --- claim_many ------------------------------------------------------------------------------


def test_claim_many_answers_none_for_fires_already_claimed_and_claims_the_rest(
    make_backend: MakeBackend, election: str
) -> None:
    """Fires another attempt claimed (one finished, one still claimed) answer None and keep
    their records; the other fires of the batch are claimed."""
    backend, reader = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    taken = backend.claim(lease, run_for(lease, at(0)), Retention())
    other = backend.claim(lease, run_for(lease, at(0), job="other"), Retention())
    assert taken is not None and other is not None
    done = finished(other)
    backend.finish(election, done)
    batch = [
        run_for(lease, at(0)),
        run_for(lease, at(10)),
        run_for(lease, at(0), job="other"),
        run_for(lease, at(10), job="other"),
    ]

    answers = backend.claim_many(lease, batch, Retention())

    assert answers == [None, batch[1], None, batch[3]]
    assert reader.lookup(election, "job", at(0)) == taken
    assert reader.lookup(election, "other", at(0)) == done
    assert reader.lookup(election, "job", at(10)) == batch[1]
    assert reader.lookup(election, "other", at(10)) == batch[3]


def test_claim_many_with_a_fire_twice_claims_it_once(
    make_backend: MakeBackend, election: str
) -> None:
    """A fire given twice in one batch is claimed by its first run; the second gets what a
    second claim() would: the stored record when it is the same attempt, else None."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    first = run_for(lease, at(0))
    resend = replace(first, started=datetime.now(UTC))
    rival = run_for(lease, at(0))
    other_job = run_for(lease, at(0), job="other")

    answers = backend.claim_many(lease, [first, rival, resend, other_job, other_job], Retention())

    assert answers == [first, None, first, other_job, other_job]
    assert backend.history(election, "job", 10) == [first]
    assert backend.history(election, "other", 10) == [other_job]


def test_claim_many_after_a_takeover_raises_lease_lost_and_writes_nothing(
    make_backend: MakeBackend, election: str, expire_lease: ExpireLease
) -> None:
    """A batch under a lease that expired and was taken over raises LeaseLost, even when
    some of its fires are claimed already (the lease is checked first), and stores nothing;
    the successor's claims of the same fires then succeed."""
    backend, successor_backend = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"), ttl=SHORT_TTL)
    early = backend.claim(lease, run_for(lease, at(0)), Retention())
    assert early is not None
    expire_lease(backend, election)
    successor = acquire(successor_backend, election, holder("r2"))
    batch = [run_for(lease, at(s)) for s in (0, 10, 20)]

    with pytest.raises(LeaseLost) as caught:
        backend.claim_many(lease, batch, Retention())

    assert caught.value.name == election
    assert successor_backend.claimed(election, "job", at(-60), at(60)) == {fire_key(at(0))}
    claims = [run_for(successor, at(s)) for s in (10, 20)]
    assert successor_backend.claim_many(successor, claims, Retention()) == claims


def test_claim_many_resent_after_it_landed_returns_the_same_records(
    make_backend: MakeBackend, election: str
) -> None:
    """A batch that landed but whose answer was lost, sent again with the same attempts
    (from another connection), answers the records the first sending stored, also once
    started or finished, and stores or trims nothing more."""
    backend, resender = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    retention = Retention(limit=2, protect=0.0)
    batch = [run_for(lease, at(s), job=job) for job in ("a", "b") for s in (0, 10, 20)]
    first = backend.claim_many(lease, batch, retention)
    assert first == batch

    assert resender.claim_many(lease, batch, retention) == first
    running = backend.start(lease, batch[0].started_now(datetime.now(UTC)))
    done = finished(backend.start(lease, batch[3].started_now(datetime.now(UTC))))
    backend.finish(election, done)
    again = resender.claim_many(lease, batch, retention)

    assert again == [running, *batch[1:3], done, *batch[4:]]
    for job in ("a", "b"):
        assert {r.key for r in resender.history(election, job, 10)} == {
            fire_key(at(s)) for s in (0, 10, 20)
        }, "a resend claimed or trimmed again"


def test_claim_many_trims_within_the_batch_like_claims_one_by_one(
    make_backend: MakeBackend, election: str
) -> None:
    """Each claim of a batch trims by the shared rule as if alone and in turn: a finished
    fire trimmed by an earlier claim of the batch is free for a later one."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    retention = Retention(limit=1, protect=0.0)
    old = backend.claim(lease, run_for(lease, at(0)), retention)
    assert old is not None
    backend.finish(election, finished(old))
    again = run_for(lease, at(0))
    batch = [run_for(lease, at(10)), again]

    # The claim of at(10) trims the finished at(0) (over the limit of 1), so at(0) is
    # free for the second run; its own claim then trims nothing (at(10) is unfinished).
    assert backend.claim_many(lease, batch, retention) == batch
    assert [r.attempt for r in backend.history(election, "job", 10)] == [
        batch[0].attempt,
        again.attempt,
    ]


def test_batches_carry_any_job_name(make_backend: MakeBackend, election: str) -> None:
    """Job names with non-ASCII letters, quotes, backslashes, slashes, spaces and dots go
    through every batch form and come back as given."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    jobs = ["zürich-täglich", 'say "hi"', "back\\slash", "a/b", "with space", ".", "日本"]
    runs = [run_for(lease, at(0), job=job) for job in jobs]

    assert backend.claim_many(lease, runs, Retention()) == runs
    started = [run.started_now(datetime.now(UTC)) for run in runs]
    assert backend.start_many(lease, started) == started
    backend.finish_many(election, [finished(run) for run in started])
    history = backend.history_many(election, jobs, 5)
    assert {job: [(r.job, r.outcome) for r in h] for job, h in history.items()} == {
        job: [(job, "ok")] for job in jobs
    }


# --- start_many ------------------------------------------------------------------------------


def test_start_many_refuses_only_the_runs_that_cannot_start(
    make_backend: MakeBackend, election: str
) -> None:
    """A start batch starts every run it may and returns, for each of the others, the
    ClaimLost start() would raise: a claim given back (gone), another attempt's record,
    a fire already started, and the second start of a run given twice."""
    backend, withdrawer = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    claims = backend.claim_many(lease, [run_for(lease, at(s)) for s in range(5)], Retention())
    assert None not in claims
    given_back, ok, taken, already, twice = (run for run in claims if run is not None)
    assert withdrawer.unclaim(election, given_back)
    backend.start(lease, already.started_now(datetime.now(UTC)))
    now = datetime.now(UTC)
    batch = [
        given_back.started_now(now),
        ok.started_now(now),
        replace(taken, attempt=new_attempt_id()).started_now(now),
        already.started_now(now),
        twice.started_now(now),
        twice.started_now(now),
    ]

    answers = backend.start_many(lease, batch)

    assert answers[1] == batch[1] and answers[4] == batch[4]
    assert reasons(answers) == [
        "gone",
        None,
        "other-attempt",
        "not-claimed",
        None,
        "not-claimed",
    ]
    refused = answers[0]
    assert isinstance(refused, ClaimLost)
    assert (refused.job, refused.scheduled_time) == ("job", at(0).isoformat())
    assert backend.lookup(election, "job", at(0)) is None
    assert backend.lookup(election, "job", at(1)) == batch[1]
    assert backend.lookup(election, "job", at(2)) == taken
    assert backend.lookup(election, "job", at(4)) == batch[4]


def reasons(answers: list[StartAnswer]) -> list[str | None]:
    """Each answer's refusal reason; ``None`` for a start."""
    return [a.reason if isinstance(a, ClaimLost) else None for a in answers]


def test_start_many_after_the_lease_is_lost_raises_and_starts_nothing(
    make_backend: MakeBackend, election: str
) -> None:
    """A start batch under a released lease raises LeaseLost (checked before any run, even
    runs that would be refused) and every record stays claimed; an empty batch answers []
    without looking at the lease."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    claims = backend.claim_many(lease, [run_for(lease, at(s)) for s in (0, 10)], Retention())
    backend.release(lease)
    now = datetime.now(UTC)
    batch = [run.started_now(now) for run in claims if run is not None]
    batch.append(run_for(lease, at(99)).started_now(now))  # would be refused: gone

    with pytest.raises(LeaseLost):
        backend.start_many(lease, batch)

    assert [r.outcome for r in backend.history(election, "job", 10)] == ["claimed", "claimed"]
    assert backend.start_many(lease, []) == []


# --- finish_many -----------------------------------------------------------------------------


def test_finish_many_by_attempt_keeps_the_later_of_two_outcomes(
    make_backend: MakeBackend, election: str
) -> None:
    """Outcomes are stored by attempt: of two outcomes of one attempt in a batch the later
    stays, another attempt's outcome and one of a fire given back change nothing."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    claims = backend.claim_many(lease, [run_for(lease, at(s)) for s in (0, 10, 20)], Retention())
    first, second, given_back = (run for run in claims if run is not None)
    assert backend.unclaim(election, given_back)
    lost, ok = finished(first, "lost"), finished(first, "ok")

    backend.finish_many(
        election,
        [
            lost,
            ok,
            finished(replace(second, attempt=new_attempt_id()), "error"),
            finished(given_back),
        ],
    )

    assert backend.lookup(election, "job", at(0)) == ok
    assert backend.lookup(election, "job", at(10)) == second
    assert backend.lookup(election, "job", at(20)) is None


# --- history_many ----------------------------------------------------------------------------


def test_history_many_equals_the_history_of_each_job(
    make_backend: MakeBackend, election: str
) -> None:
    """history_many() answers, for every job asked (once each, missing ones included), what
    history() answers for it: newest first, at most ``limit``; all empty for limit <= 0."""
    backend, reader = make_backend(), make_backend()
    lease = acquire(backend, election, holder("r1"))
    counts = {"a": 5, "b": 1, "c": 3}
    for job, count in counts.items():
        runs = [run_for(lease, at(s * 10), job=job) for s in range(count)]
        assert backend.claim_many(lease, runs, Retention()) == runs
    backend.finish(election, finished(backend.history(election, "a", 1)[0]))
    jobs = ["c", "a", "missing", "b", "a"]

    for limit in (1, 3, 10):
        many = reader.history_many(election, jobs, limit)
        assert list(many) == ["c", "a", "missing", "b"]
        assert many == {job: reader.history(election, job, limit) for job in many}
    assert reader.history_many(election, jobs, 0) == {job: [] for job in ("c", "a", "missing", "b")}
    assert reader.history_many(election, [], 10) == {}


# --- the same answers and history as single calls --------------------------------------------


def project(record: RunRecord | None) -> tuple[object, ...] | None:
    """A record without its token (the two clusters' leases have different tokens)."""
    if record is None:
        return None
    return (record.job, record.key, record.attempt, record.outcome, record.message)


def projected(answers: list[StartAnswer]) -> list[object]:
    return [a.reason if isinstance(a, ClaimLost) else project(a) for a in answers]


@pytest.mark.parametrize("seed", [3, 4])
def test_a_batch_answers_and_stores_what_single_calls_would(
    make_backend: MakeBackend, election: str, seed: int
) -> None:
    """One random script (new fires, resends, other attempts, fires twice in a batch,
    starts of any state, outcomes of any attempt, retention changing) played as batches on
    one cluster and one call at a time on another: same answers, same history."""
    backend = make_backend()
    batch_lease = acquire(backend, f"{election}-b", holder("r1"))
    single_lease = acquire(backend, f"{election}-s", holder("r1"))
    rng = random.Random(seed)
    jobs = ("a", "b", "c")
    known: list[RunRecord] = []  # every run proposed so far (for resends and outcomes)

    def on(lease: Lease, run: RunRecord) -> RunRecord:
        return replace(run, token=lease.token)

    for _ in range(6):
        retention = Retention(limit=rng.choice([1, 2, 4, 100]), protect=rng.choice([0, 15]))
        batch: list[RunRecord] = []
        for _ in range(rng.randrange(1, 25)):
            roll = rng.random()
            if known and roll < 0.25:
                batch.append(rng.choice(known))  # a resend, or another attempt's fire
            elif batch and roll < 0.35:
                batch.append(rng.choice(batch))  # twice in the batch
            else:
                batch.append(run_for(batch_lease, at(rng.randrange(30)), job=rng.choice(jobs)))
        known += batch

        claimed_b = backend.claim_many(batch_lease, [on(batch_lease, r) for r in batch], retention)
        claimed_s = [backend.claim(single_lease, on(single_lease, r), retention) for r in batch]
        assert [project(a) for a in claimed_b] == [project(a) for a in claimed_s]

        now = datetime.now(UTC)
        starts = [r.started_now(now) for r in rng.sample(known, min(len(known), 12))]
        started_b = backend.start_many(batch_lease, [on(batch_lease, r) for r in starts])
        started_s: list[StartAnswer] = []
        for run in starts:
            try:
                started_s.append(backend.start(single_lease, on(single_lease, run)))
            except ClaimLost as refused:
                started_s.append(refused)
        assert projected(started_b) == projected(started_s)

        outcomes = [
            r.finished(rng.choice(["ok", "error", "lost"]), now, "m")
            for r in rng.sample(known, min(len(known), 12))
        ]
        backend.finish_many(f"{election}-b", [on(batch_lease, r) for r in outcomes])
        for run in outcomes:
            backend.finish(f"{election}-s", on(single_lease, run))

        history_b = backend.history_many(f"{election}-b", jobs, 100)
        history_s = {job: backend.history(f"{election}-s", job, 100) for job in jobs}
        assert {j: [project(r) for r in h] for j, h in history_b.items()} == {
            j: [project(r) for r in h] for j, h in history_s.items()
        }
    assert sum(len(h) for h in history_s.values()) > 10, "the script stored too little"


class Looping(BatchDefaults):
    """A ledger with only the single calls (those of ``backend``) and the looping batches
    of :class:`BatchDefaults`: what a new backend starts with."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        return self._backend.claim(lease, run, retention)

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        return self._backend.start(lease, run)

    def finish(self, name: str, run: RunRecord) -> None:
        self._backend.finish(name, run)

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        return self._backend.history(name, job, limit)


def test_batch_defaults_loop_to_the_same_answers(make_backend: MakeBackend, election: str) -> None:
    """BatchDefaults' loops answer a batch as the native batches do: claims (a fire twice),
    starts (one refused, returned not raised), outcomes, history of several jobs."""
    backend = make_backend()
    looping = Looping(backend)
    native_lease = acquire(backend, f"{election}-n", holder("r1"))
    loop_lease = acquire(backend, f"{election}-l", holder("r1"))
    batch = [run_for(native_lease, at(s), job=job) for job in ("a", "b") for s in (0, 10)]
    batch.append(batch[0])

    def on(lease: Lease, runs: list[RunRecord]) -> list[RunRecord]:
        return [replace(run, token=lease.token) for run in runs]

    native = backend.claim_many(native_lease, on(native_lease, batch), Retention())
    looped = looping.claim_many(loop_lease, on(loop_lease, batch), Retention())
    assert [project(a) for a in native] == [project(a) for a in looped]
    starts = [run.started_now(datetime.now(UTC)) for run in batch]
    native_started = backend.start_many(native_lease, on(native_lease, starts))
    looped_started = looping.start_many(loop_lease, on(loop_lease, starts))
    assert projected(native_started) == projected(looped_started)
    assert reasons(looped_started) == [None, None, None, None, "not-claimed"]
    outcomes = [finished(run) for run in starts[:2]]
    backend.finish_many(f"{election}-n", on(native_lease, outcomes))
    looping.finish_many(f"{election}-l", on(loop_lease, outcomes))
    native_history = backend.history_many(f"{election}-n", ["a", "b", "c"], 10)
    looped_history = looping.history_many(f"{election}-l", ["a", "b", "c"], 10)
    assert {j: [project(r) for r in h] for j, h in native_history.items()} == {
        j: [project(r) for r in h] for j, h in looped_history.items()
    }
    assert [[r.outcome for r in looped_history[job]] for job in "abc"] == [
        ["ok", "ok"],
        ["running", "running"],
        [],
    ]


# --- a large batch ---------------------------------------------------------------------------


def test_two_thousand_fires_in_one_batch(make_backend: MakeBackend, election: str) -> None:
    """2,000 fires (of 2,000 jobs with long names: more than ZooKeeper takes in one request,
    so it must split) are claimed, started and finished in one batch each, read back in one
    history_many, and a resend of the claims answers the finished records."""
    backend = make_backend()
    lease = acquire(backend, election, holder("r1"))
    jobs = [f"job-{i:04d}-" + "x" * 200 for i in range(2000)]
    runs = [run_for(lease, at(0), job=job) for job in jobs]
    retention = Retention(limit=5)

    assert backend.claim_many(lease, runs, retention) == runs
    now = datetime.now(UTC)
    started = [run.started_now(now) for run in runs]
    assert backend.start_many(lease, started) == started
    done = [finished(run) for run in started]
    backend.finish_many(election, done)

    assert backend.history_many(election, jobs, 10) == {run.job: [run] for run in done}
    assert backend.claim_many(lease, runs, retention) == done
