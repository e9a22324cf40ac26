"""Settling claims in doubt (scheduler/firing/recovery.py) on the embedded backend and a fake clock.

The backend is the real SQLite one; only the elector is a stand-in that says which term
this replica leads, so each branch can be driven without timing games. The end-to-end
cases (a claim really answered too late, on ZooKeeper and Redis) are in
tests/chaos/test_findings.py (F10).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.sqlite import SqliteBackend
from scheduler.clock import FakeClock
from scheduler.errors import LeaseLost
from scheduler.firing.lanes import Lane
from scheduler.firing.recovery import BACKOFF_CAP, Handover, Recovery
from scheduler.jobs.spec import build_spec
from scheduler.leadership.lease import Holder
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.logs import get_logger
from scheduler.ops.metrics import Metrics

CLUSTER = "recovery"
TIMINGS = LeaseTimings.of(30.0, None, None)
START = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
FIRE = datetime(2026, 1, 1, 0, 0, 29, tzinfo=UTC)  # one second ago, within the grace


def _noop(ctx: object) -> None:
    """A job that does nothing."""


class Leading:
    """Stands in for the elector: the term this replica leads (or None), and metrics."""

    def __init__(self) -> None:
        self.term: Term | None = None
        self.metrics = Metrics()

    def current_term(self) -> Term | None:
        return self.term

    def count(self, result: str) -> float:
        """How many claims were counted with ``result`` (``baton_claims_total``)."""
        value = self.metrics.registry.get_sample_value("baton_claims_total", {"result": result})
        return value or 0.0


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock(wall=START)
        self.backend = SqliteBackend.from_url(f"sqlite:///{tmp_path}/b.db", clock=self.clock)
        self.elector = Leading()
        self.specs = {
            name: build_spec(_noop, every="1s", name=name, catch_up=policy, misfire_grace=grace)
            for name, policy, grace in (
                ("all", "all", 10.0),
                ("latest", "latest", 10.0),
                ("none", "none", 10.0),
                ("slow", "all", 120.0),  # a grace longer than the lease TTL (30 s)
            )
        }
        #: The fires settling handed back to be queued: (job, fire, keep).
        self.submitted: list[tuple[str, datetime, bool]] = []
        self.recovery = Recovery(
            self.specs,
            self.elector,  # type: ignore[arg-type]
            self.backend,
            CLUSTER,
            self.clock,
            self.elector.metrics,
            TIMINGS.lease_ttl + TIMINGS.op_timeout,
            get_logger(replica="r1"),
            threading.Event(),
        )

    def settle(self) -> Term | None:
        """One settling pass: the fires it returns go to ``submitted``; the term to catch
        up is returned."""
        settled = self.recovery.settle()
        self.submitted += [(fire.job, fire.at, fire.keep) for fire in settled.fires]
        return settled.catch_up

    def lead(self, replica: str) -> Term:
        """Take the lease as ``replica`` (releasing any previous holder's) and lead."""
        if self.elector.term is not None:
            self.backend.release(self.elector.term.lease)
        lease = self.backend.try_acquire(CLUSTER, Holder.new(replica), TIMINGS.lease_ttl)
        assert lease is not None
        term = Term(lease, TIMINGS, self.clock)
        self.elector.term = term
        return term

    def claim(self, term: Term, job: str = "all", fire: datetime = FIRE) -> RunRecord:
        run = RunRecord(job, fire, term.lease.holder.replica_id, term.token, started=fire)
        assert self.backend.claim(term.lease, run, Retention()) == run
        return run

    def stored(self, job: str = "all", fire: datetime = FIRE) -> RunRecord | None:
        return self.backend.lookup(CLUSTER, job, fire)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.backend.close()


def test_landed_claim_of_the_current_term_is_adopted_and_run_without_claiming(rig: Rig) -> None:
    """A claim that landed unanswered in the term still led is adopted and run, not re-claimed."""
    term = rig.lead("r1")
    run = rig.claim(term)
    rig.recovery.doubt(run)  # sent; the answer timed out

    assert rig.settle() is None
    assert rig.submitted == [("all", FIRE, True)]  # kept: never coalesced away
    assert rig.recovery.take_handover("all", FIRE, term) == Handover(run, resend=False)
    assert rig.recovery.take_handover("all", FIRE, term) is None  # handed out once
    assert not rig.recovery.pending()
    assert rig.elector.count("confirmed_late") == 1


def test_landed_claim_of_a_term_no_longer_led_is_given_back(rig: Rig) -> None:
    """A claim that landed under a term since lost is unclaimed; the follower does not run it."""
    old = rig.lead("r1")
    run = rig.claim(old)
    rig.recovery.doubt(run)
    rig.elector.term = None  # deposed meanwhile

    rig.settle()
    assert rig.stored() is None  # the fire is unclaimed again
    assert rig.submitted == []  # a follower leaves it to the leader
    assert not rig.recovery.pending()
    assert rig.elector.count("withdrawn") == 1


def test_claim_given_back_by_a_newer_term_of_ours_is_claimed_afresh(rig: Rig) -> None:
    """A landed claim of our older term is given back, and the fire claimed in the new term."""
    old = rig.lead("r1")
    run = rig.claim(old)
    rig.recovery.doubt(run)
    rig.lead("r1")  # the same replica, a new term (new token)

    rig.settle()
    assert rig.stored() is None
    assert rig.submitted == [("all", FIRE, False)]  # claim it again under the new token


def test_unlanded_claim_is_resent_as_the_same_attempt_and_kept_until_confirmed(
    rig: Rig,
) -> None:
    """Not found in the same term: the lane sends the *same* attempt again (idempotent), it
    is never a second attempt at the fire."""
    term = rig.lead("r1")
    unsent = RunRecord("all", FIRE, "r1", term.token, started=FIRE)
    rig.recovery.doubt(unsent)

    rig.settle()
    assert rig.submitted == [("all", FIRE, True)]
    assert rig.recovery.take_handover("all", FIRE, term) == Handover(unsent, resend=True)
    assert rig.recovery.pending()  # a delayed request may still land: keep watching
    rig.recovery.claimed(unsent)  # the resend was answered
    assert not rig.recovery.pending()


def test_follower_stops_watching_an_unlanded_claim_once_it_cannot_land(rig: Rig) -> None:
    """Not found and not leading: watched until the lease it was sent under has surely
    expired on the server (lease_ttl + op_timeout), then forgotten."""
    term = rig.lead("r1")
    unsent = RunRecord("slow", FIRE, "r1", term.token, started=FIRE)
    rig.recovery.doubt(unsent)
    rig.elector.term = None

    rig.clock.advance(TIMINGS.lease_ttl / 2)
    rig.settle()
    assert rig.recovery.pending() and rig.submitted == []
    rig.clock.advance(TIMINGS.lease_ttl / 2 + TIMINGS.op_timeout + 0.01)
    rig.settle()
    assert not rig.recovery.pending()


def test_someone_elses_claim_settles_the_doubt(rig: Rig) -> None:
    """Another replica's claim of the fire settles our doubt: theirs stands, nothing is resent."""
    mine = rig.lead("r1")
    unsent = RunRecord("all", FIRE, "r1", mine.token, started=FIRE)
    rig.recovery.doubt(unsent)
    theirs = rig.lead("r2")
    rig.claim(theirs)
    rig.elector.term = None

    rig.settle()
    assert rig.stored() is not None and rig.stored().token == theirs.token  # type: ignore[union-attr]
    assert rig.submitted == [] and not rig.recovery.pending()


def test_doubt_past_misfire_grace_is_recorded_lost(rig: Rig) -> None:
    """A claim still in doubt past misfire_grace is recorded "lost" (claimed but never started)."""
    term = rig.lead("r1")
    run = rig.claim(term)
    rig.recovery.doubt(run)
    rig.clock.advance(11)  # past misfire_grace (10 s)

    rig.settle()
    stored = rig.stored()
    assert stored is not None and stored.outcome == "lost"
    assert stored.message == "claimed but never started"
    assert rig.submitted == [] and not rig.recovery.pending()


def test_adopted_claim_of_an_ended_term_goes_back_and_is_withdrawn(rig: Rig) -> None:
    """An adopted claim whose term ends before it runs is not handed over, and is unclaimed."""
    term = rig.lead("r1")
    run = rig.claim(term)
    rig.recovery.doubt(run)
    rig.settle()  # adopted for this term
    rig.elector.term = None

    assert rig.recovery.take_handover("all", FIRE, None) is None
    assert rig.recovery.pending()
    rig.settle()
    assert rig.stored() is None


def test_new_leader_runs_an_orphan_once_its_claimant_gives_it_back(rig: Rig) -> None:
    """A new leader watches an old term's claim and runs the fire only once it is unclaimed."""
    old = rig.lead("r1")
    orphan = rig.claim(old)
    new = rig.lead("r2")
    assert rig.recovery.suspect(orphan, new)

    rig.settle()
    assert rig.submitted == [] and rig.recovery.pending()  # still claimed: hands off
    with pytest.raises(LeaseLost):  # the claimant can no longer start it
        rig.backend.start(old.lease, orphan.started_now(START))
    assert rig.backend.unclaim(CLUSTER, orphan)  # the claimant: "never started"
    rig.clock.advance(BACKOFF_CAP)  # the next look at a watched claim backs off
    rig.settle()
    assert rig.submitted == [("all", FIRE, False)]
    assert not rig.recovery.pending()


def test_suspects_follow_the_job_policy_and_the_term(rig: Rig) -> None:
    """Orphans are watched per catch_up ("none" never, "latest" not behind a newer run) and term."""
    old = rig.lead("r1")
    none_run = rig.claim(old, "none")
    latest_run = rig.claim(old, "latest")
    new = rig.lead("r2")
    assert not rig.recovery.suspect(none_run, new)  # catch_up="none": never watched
    assert not rig.recovery.pending()
    rig.recovery.suspect(latest_run, new)
    rig.claim(new, "latest", FIRE + timedelta(seconds=1))  # a newer fire ran
    rig.backend.unclaim(CLUSTER, latest_run)
    rig.settle()
    assert rig.submitted == []  # "latest" does not go back for an older fire

    stale = rig.claim(new, "all", FIRE - timedelta(seconds=1))
    rig.recovery.suspect(stale, new)
    rig.lead("r3")  # the watching term ended
    rig.settle()
    assert rig.submitted == [] and not rig.recovery.pending()


def test_skipped_fires_are_caught_up_in_the_same_term_only(rig: Rig) -> None:
    """Fires skipped in a term are caught up once, and only while that same term leads."""
    term = rig.lead("r1")
    rig.recovery.skipped(term)
    assert rig.settle() is term
    assert rig.settle() is None  # once

    rig.recovery.skipped(term)
    rig.lead("r2")
    assert rig.settle() is None  # the new term did its own catch-up


def test_shutdown_gives_back_every_claim_in_doubt(rig: Rig) -> None:
    """At shutdown every claim in doubt is given back (unclaimed) and nothing stays pending."""
    term = rig.lead("r1")
    run = rig.claim(term)
    rig.recovery.doubt(run)

    rig.recovery.withdraw_all()
    assert rig.stored() is None and not rig.recovery.pending()


def test_lane_never_coalesces_away_a_claim_already_made() -> None:
    """A "latest" lane keeps only its newest waiting fire, except fires handed over with
    keep=True (claims confirmed late): those run whatever comes after them."""
    spec = build_spec(_noop, every="1s", name="latest", catch_up="latest", misfire_grace=10.0)
    # The first fire is handed over and never done: the lane stays busy, the rest wait.
    lane = Lane(spec, lambda lane, fire: None, lambda lane, fires, reason: None, lambda: True)
    at = [FIRE + timedelta(seconds=s) for s in range(4)]

    lane.submit([at[0]])
    lane.submit([at[1]], keep=True)
    lane.submit([at[2]])
    lane.submit([at[3]])
    assert lane.pending == [at[1], at[3]]


def test_orphan_that_started_is_never_run_again(rig: Rig) -> None:
    """A suspect whose claimant started it (before the new term) is dropped, not run."""
    old = rig.lead("r1")
    orphan = rig.claim(old)
    rig.backend.start(old.lease, orphan.started_now(START))
    new = rig.lead("r2")
    rig.recovery.suspect(orphan, new)

    rig.settle()
    assert rig.submitted == [] and not rig.recovery.pending()
    assert not rig.backend.unclaim(CLUSTER, orphan)  # started: never given back


def test_orphan_never_given_back_is_recorded_lost_after_the_grace(rig: Rig) -> None:
    """A claimed orphan whose claimant never answers is marked lost once past the grace."""
    old = rig.lead("r1")
    orphan = rig.claim(old)
    new = rig.lead("r2")
    rig.recovery.suspect(orphan, new)
    rig.clock.advance(11)

    rig.settle()
    stored = rig.stored()
    assert stored is not None and (stored.outcome, stored.message) == (
        "lost",
        "claimed but never started",
    )
    assert not rig.recovery.pending()


def test_withdrawn_second_attempt_never_deletes_the_first_attempts_run(rig: Rig) -> None:
    """F11: attempt A of a fire ran; attempt B of the same fire, same token, went
    unanswered and its term ended: settling B leaves A's record alone."""
    term = rig.lead("r1")
    first = rig.claim(term)
    rig.backend.start(term.lease, first.started_now(FIRE))
    rig.backend.finish(CLUSTER, first.started_now(FIRE).finished("ok", START))
    second = RunRecord("all", FIRE, "r1", term.token, started=FIRE)
    assert rig.backend.claim(term.lease, second, Retention()) is None
    rig.recovery.doubt(second)
    rig.elector.term = None  # deposed before the backend answered again

    rig.settle()
    stored = rig.stored()
    assert stored is not None and (stored.attempt, stored.outcome) == (first.attempt, "ok")
    assert rig.elector.count("withdrawn") == 0
    assert rig.submitted == [] and not rig.recovery.pending()


def test_start_landed_unanswered_in_an_ended_term_is_recorded_lost_not_given_back(
    rig: Rig,
) -> None:
    """A doubt whose start landed (record running, job never run) is not withdrawn once
    the term is over: a started fire is never given back."""
    term = rig.lead("r1")
    run = rig.claim(term)
    rig.backend.start(term.lease, run.started_now(FIRE))
    rig.recovery.doubt(run)
    rig.elector.term = None

    rig.settle()
    stored = rig.stored()
    assert stored is not None and stored.outcome == "lost"
    assert rig.elector.count("withdrawn") == 0


def test_start_landed_unanswered_in_the_same_term_is_handed_to_the_lane(rig: Rig) -> None:
    """Same case, term still led: the lane runs it as found (no second start)."""
    term = rig.lead("r1")
    run = rig.claim(term)
    started = rig.backend.start(term.lease, run.started_now(FIRE))
    rig.recovery.doubt(run)

    rig.settle()
    assert rig.recovery.take_handover("all", FIRE, term) == Handover(started, resend=False)
