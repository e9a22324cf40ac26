"""The claims layer (scheduler/firing/claims.py): the per-term attempt ledger on a fake
clock, and a fire's fate (claim, start, outcome, doubts, adoption) on the embedded backend
with a stand-in for leadership."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.sqlite import SqliteBackend
from scheduler.clock import FakeClock
from scheduler.errors import BackendUnavailable
from scheduler.firing.claims import Attempts, Claims, Fire
from scheduler.jobs.spec import build_spec
from scheduler.leadership.lease import Holder, Lease
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.logs import get_logger
from tests.harness.stand_in import StandInElector

FIRE = datetime(2026, 1, 1, tzinfo=UTC)


def test_one_attempt_per_fire_per_term() -> None:
    """A fire proposed twice in one term gets one attempt; a new term gets its own."""
    attempts = Attempts(keep=60)
    assert attempts.first(7, "job", FIRE)
    assert not attempts.first(7, "job", FIRE)
    assert not attempts.first(7, "job", FIRE + timedelta(microseconds=300))  # same ms key
    assert attempts.first(7, "job", FIRE + timedelta(seconds=1))
    assert attempts.first(7, "other", FIRE)
    assert attempts.first(8, "job", FIRE)  # a new term
    assert not attempts.first(8, "job", FIRE)


def test_entries_are_forgotten_only_keep_seconds_of_fire_time_later() -> None:
    """An attempt is forgotten once its job has one ``keep`` seconds newer; no clock is read,
    so a wall-clock step cannot make one forgotten."""
    attempts = Attempts(keep=60)
    assert attempts.first(1, "job", FIRE)
    assert attempts.first(1, "job", FIRE + timedelta(seconds=59))
    assert not attempts.first(1, "job", FIRE)  # still within 60 s of the newest
    assert attempts.first(1, "other", FIRE + timedelta(seconds=500))  # another job: no effect
    assert not attempts.first(1, "job", FIRE)
    assert attempts.first(1, "job", FIRE + timedelta(seconds=61))  # forgets FIRE
    assert attempts.first(1, "job", FIRE)  # too old to be kept: not remembered either
    assert len(attempts) == 3  # job: +59 s, +61 s; other: +500 s
    # Proposals out of order are recognised wherever they fall.
    for offset in (30, 10, 50, 20):
        assert attempts.first(1, "job", FIRE + timedelta(seconds=offset))
    for offset in (10, 20, 30, 50, 59, 61):
        assert not attempts.first(1, "job", FIRE + timedelta(seconds=offset))


def test_a_fire_is_started_once() -> None:
    """The last guard: this replica never starts the job of one fire twice, whatever
    attempt it comes under."""
    attempts = Attempts(keep=60)
    assert not attempts.started("job", FIRE)
    assert attempts.start("job", FIRE)
    assert attempts.started("job", FIRE)
    assert not attempts.start("job", FIRE)
    assert attempts.start("job", FIRE + timedelta(seconds=1))
    assert attempts.start("other", FIRE)


# -- a fire's fate ------------------------------------------------------------------------------

CLUSTER = "claims"
TIMINGS = LeaseTimings.of(30.0, None, None)
NOW = FIRE + timedelta(seconds=30)


def _noop(ctx: object) -> None:
    """A job that does nothing."""


class Flaky:
    """The embedded backend; storing outcomes fails while ``finish_down``, and claims land
    but their answer is lost while ``claim_unanswered``. Counts the fires sent to claim
    (``claims_sent``) and the claim calls (``claim_calls``: a batch is one)."""

    def __init__(self, backend: SqliteBackend) -> None:
        self.backend = backend
        self.finish_down = False
        self.claim_unanswered = False
        self.claims_sent = 0
        self.claim_calls = 0

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        if self.finish_down:
            raise BackendUnavailable("sqlite://test", "no answer")
        self.backend.finish_many(name, runs)

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        self.claims_sent += len(runs)
        self.claim_calls += 1
        claimed = self.backend.claim_many(lease, runs, retention)
        if self.claim_unanswered:
            raise BackendUnavailable("sqlite://test", "answer lost")
        return claimed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(wall=NOW)
        self.backend = Flaky(SqliteBackend.from_url(f"sqlite:///{tmp_path}/b.db", clock=self.clock))
        self.leadership = StandInElector("r1", TIMINGS)
        self.wake = threading.Event()
        specs = [
            build_spec(_noop, every="1s", name=name, catch_up=policy, misfire_grace=30.0)
            for name, policy in (("all", "all"), ("none", "none"))
        ]
        self.claims = Claims(
            specs,
            self.leadership,
            self.backend,  # type: ignore[arg-type]
            CLUSTER,
            replica_id="r1",
            timings=TIMINGS,
            metrics=self.leadership.metrics,
            clock=self.clock,
            log=get_logger(replica="r1"),
            wake=self.wake,
        )

    def lead(self, replica: str = "r1") -> Term:
        """Take the lease as ``replica`` (releasing the previous term's) and lead."""
        if self.leadership.term is not None:
            self.backend.release(self.leadership.term.lease)
        lease = self.backend.try_acquire(CLUSTER, Holder.new(replica), TIMINGS.lease_ttl)
        assert lease is not None
        self.leadership.term = Term(lease, TIMINGS, self.clock)
        return self.leadership.term

    def stored(self, fire: datetime, job: str = "all") -> RunRecord | None:
        return self.backend.lookup(CLUSTER, job, fire)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.backend.close()


def test_a_batch_is_answered_fire_by_fire_in_order(rig: Rig) -> None:
    """One call claims several fires: each gets its claim, or None (here a repeat of a fire
    already attempted in this term)."""
    term = rig.lead()
    a, b = FIRE + timedelta(seconds=28), FIRE + timedelta(seconds=29)
    first, repeat, second = rig.claims.claim([Fire("all", a), Fire("all", a), Fire("all", b)], term)
    assert first is not None and first.outcome == "claimed" and first.scheduled_time == a
    assert repeat is None
    assert second is not None and second.scheduled_time == b
    assert rig.backend.claims_sent == 2


def test_a_follower_or_a_held_leader_claims_nothing(rig: Rig) -> None:
    """No term, or a resign under way: no claim is sent."""
    term = rig.lead()
    assert rig.claims.claim([Fire("all", NOW)], None) == [None]
    assert rig.claims.claim([Fire("all", NOW)], term, held=True) == [None]
    assert rig.backend.claims_sent == 0


def test_a_claim_and_its_start_then_the_outcome_is_stored(rig: Rig) -> None:
    """claim -> start -> finish: the record goes claimed, running, ok."""
    term = rig.lead()
    (claimed,) = rig.claims.claim([Fire("all", NOW)], term)
    assert claimed is not None
    started = rig.claims.start(claimed, term)
    assert started is not None and rig.stored(NOW) == started
    assert rig.claims.start(claimed, term) is None  # never started twice
    rig.claims.finish([started.finished("ok", NOW)])
    stored = rig.stored(NOW)
    assert stored is not None and stored.outcome == "ok"


def test_an_outcome_the_backend_cannot_take_is_kept_and_stored_later(rig: Rig) -> None:
    """finish fails: the outcome is kept (the maintenance loop is woken) and a later flush
    stores it once the backend answers."""
    term = rig.lead()
    (claimed,) = rig.claims.claim([Fire("all", NOW)], term)
    assert claimed is not None
    started = rig.claims.start(claimed, term)
    assert started is not None
    rig.backend.finish_down = True
    rig.claims.finish([started.finished("ok", NOW)])
    assert rig.wake.is_set()
    rig.claims.flush()  # still no answer: kept
    assert rig.stored(NOW) == started
    rig.backend.finish_down = False
    rig.claims.flush()
    stored = rig.stored(NOW)
    assert stored is not None and stored.outcome == "ok"


def test_settling_returns_the_fire_to_run_instead_of_running_it(rig: Rig) -> None:
    """A claim that landed unanswered is in doubt; once the backend answers, settle()
    returns the fire (kept from coalescing) and the term to catch up; claiming that fire
    again takes the landed claim as found, without a second claim."""
    term = rig.lead()
    rig.backend.claim_unanswered = True
    assert rig.claims.claim([Fire("all", NOW)], term) == [None]
    rig.backend.claim_unanswered = False
    assert rig.claims.pending() and not rig.leadership.backend_ok
    assert rig.claims.settle().fires == []  # the backend is not confirmed yet: later
    rig.leadership.backend_ok = True  # a renewal answered

    settled = rig.claims.settle()
    assert settled.fires == [Fire("all", NOW, keep=True)]
    assert settled.catch_up is term  # fires skipped meanwhile are caught up by this term
    (adopted,) = rig.claims.claim(settled.fires, term)
    assert adopted is not None and adopted == rig.stored(NOW)
    assert rig.backend.claims_sent == 1
    assert rig.claims.start(adopted, term) is not None


def test_a_new_leader_adopts_the_runs_an_older_term_left_unfinished(rig: Rig) -> None:
    """A running record of an older term is marked lost; a claimed one is watched (its
    claimant may still give it back) unless its job never catches up, then marked lost."""
    old = rig.lead("r0")
    ran, claimed = NOW - timedelta(seconds=2), NOW - timedelta(seconds=1)
    first, second, third = rig.claims.claim(
        [Fire("all", ran), Fire("all", claimed), Fire("none", claimed)], old
    )
    assert first is not None and second is not None and third is not None
    assert rig.claims.start(first, old) is not None
    new = rig.lead("r1")

    recent = [*rig.backend.history(CLUSTER, "all", 10), *rig.backend.history(CLUSTER, "none", 10)]
    rig.claims.adopt(recent, new, NOW)
    orphan = rig.stored(ran)
    assert orphan is not None and orphan.outcome == "lost"
    assert orphan.message == "its replica stopped before the run ended"
    watched = rig.stored(claimed)
    assert watched is not None and watched.outcome == "claimed" and rig.claims.pending()
    never = rig.stored(claimed, "none")
    assert never is not None and (never.outcome, never.message) == (
        "lost",
        "claimed but never started",
    )
