"""The catch-up planner (scheduler/firing/catchup.py): a pure function of the job, its
history, the claimed fires, the fires pauses skipped and now — no backend, clock or thread.

The same plans end to end (a real runner reading a real backend) are in
tests/unit/test_catch_up.py, tests/unit/test_dst.py and tests/chaos/test_findings.py (F3).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.backends.runs import RunRecord, fire_key
from scheduler.firing import catchup
from scheduler.firing.catchup import CLAIM_AHEAD
from scheduler.firing.pauses import PausedFires
from scheduler.jobs.spec import JobSpec, build_spec

BASE = datetime(2026, 1, 1, tzinfo=UTC)
NOW = BASE + timedelta(seconds=30)


def _noop(ctx: object) -> None:
    """A job that does nothing."""


def at(second: float) -> datetime:
    return BASE + timedelta(seconds=second)


def job(policy: str, grace: float = 30.0) -> JobSpec:
    return build_spec(_noop, every="1s", name="job", catch_up=policy, misfire_grace=grace)


def history(seconds: Iterable[float]) -> list[RunRecord]:
    """Finished runs at ``seconds``, newest first (as a backend returns history)."""
    runs = [RunRecord("job", at(s), "r0", 1, started=at(s)).finished("ok", at(s)) for s in seconds]
    return sorted(runs, key=lambda run: run.scheduled_time, reverse=True)


def plan(
    spec: JobSpec,
    ran: Iterable[float],
    paused: Iterable[float] = (),
    now: datetime = NOW,
    claimed: Iterable[float] | None = None,
) -> list[datetime]:
    """What the runner does: the claimed keys it reads are those in the claims window."""
    recent = history(ran)
    window = catchup.claims_window(spec, recent, now)
    keys: set[int] = set()
    if window is not None:
        first, last = fire_key(window[0]), fire_key(window[1])
        seconds = ran if claimed is None else claimed
        keys = {fire_key(at(s)) for s in seconds if first <= fire_key(at(s)) <= last}
    skipped = {at(s) for s in paused}
    return catchup.plan(spec, recent, keys, skipped, now)


def test_all_runs_every_unclaimed_fire_after_the_earliest_claim_in_the_window() -> None:
    """catch_up=all: ran :00-:10, now :30, grace 30 s: :11-:30 are queued, oldest first."""
    assert plan(job("all"), range(11)) == [at(s) for s in range(11, 31)]


def test_all_fills_holes_before_a_newer_claim() -> None:
    """F3: claims at :00-:10 and :29 (a leader's term ended part-way through its backlog):
    the holes :11-:28 are queued, and :30."""
    assert plan(job("all"), [*range(11), 29]) == [at(s) for s in [*range(11, 29), 30]]


def test_latest_runs_only_the_newest_fire_after_the_newest_claim() -> None:
    """catch_up=latest: an older hole is superseded by a later run; only :30 is queued."""
    assert plan(job("latest"), [*range(11), 29]) == [at(30)]
    assert plan(job("latest"), range(31)) == []  # the newest fire ran


def test_none_never_catches_up() -> None:
    """catch_up=none: nothing, whatever was missed."""
    assert plan(job("none"), range(5)) == []
    assert catchup.claims_window(job("none"), history(range(5)), NOW) is None


@pytest.mark.parametrize("policy", ["all", "latest", "none"])
def test_a_cold_start_replays_nothing(policy: str) -> None:
    """No history at all: the job has missed nothing, and no claims need reading."""
    assert plan(job(policy), []) == []
    assert catchup.claims_window(job(policy), [], NOW) is None


def test_fires_a_pause_skipped_count_as_handled() -> None:
    """Fires skipped as paused (:11-:24) are never queued; the ones after them are."""
    assert plan(job("all"), range(11), paused=range(11, 25)) == [at(s) for s in range(25, 31)]
    assert plan(job("all"), range(11), paused=range(11, 31)) == []
    # latest: a skipped fire newer than the newest claim supersedes the older holes.
    assert plan(job("latest"), range(11), paused=[30]) == []
    assert plan(job("latest"), range(11), paused=[25]) == [at(30)]


def test_paused_fires_from_a_record_and_from_memory() -> None:
    """PausedFires (the stored runs and this leader's unsaved skips) is what plan reads."""
    record = PausedFires(((fire_key(at(11)), fire_key(at(20))),), frozenset({at(22)}))
    recent = history(range(11))
    due = catchup.due(job("all"), NOW)
    keys = {fire_key(f) for f in due if f <= at(10)}
    queued = catchup.plan(job("all"), recent, keys, record, NOW)
    assert queued == [at(s) for s in [21, *range(23, 31)]]


def test_only_fires_within_misfire_grace_are_looked_at() -> None:
    """Grace 10 s at :30: only :20-:30 are candidates; fires before are past their grace."""
    assert plan(job("all", grace=10.0), range(11)) == [at(s) for s in range(20, 31)]
    assert plan(job("latest", grace=10.0), range(11)) == [at(30)]
    window = catchup.claims_window(job("all", grace=10.0), history(range(11)), NOW)
    assert window == (at(20), at(30))


def test_the_fires_just_ahead_of_now_are_planned() -> None:
    """Up to CLAIM_AHEAD past now: the trigger handed those over before this replica led."""
    now = at(30) - CLAIM_AHEAD / 2
    assert plan(job("latest"), range(11), now=now) == [at(30)]
    assert at(30) not in plan(job("all"), range(11), now=at(30) - 2 * CLAIM_AHEAD)


def test_claimed_keys_outside_the_window_are_ignored() -> None:
    """Only claims within the claims window anchor the holes: an older claim passed in by
    mistake does not make the fires before the earliest claim in the window look missed."""
    spec = job("all", grace=10.0)
    recent = history([25])
    keys = {fire_key(at(5)), fire_key(at(25))}
    assert catchup.plan(spec, recent, keys, frozenset(), NOW) == [at(s) for s in range(26, 31)]


def test_a_fire_claimed_by_anyone_is_never_planned_again() -> None:
    """Whatever became of a claim (ran, lost, still claimed), its fire is handled."""
    assert plan(job("all"), range(11), claimed=[*range(11), 15, 16]) == [
        at(s) for s in range(11, 31) if s not in (15, 16)
    ]


def test_by_urgency_orders_by_policy_then_fires_at_stake() -> None:
    """by_urgency: "all" jobs, then "latest", then "none"; within a policy the most fires in
    the look-back window first, otherwise the given order; a huge window is counted only up
    to MOST_READ (never listed)."""

    def spec(name: str, policy: str, every: str, grace: float) -> JobSpec:
        return build_spec(_noop, every=every, name=name, catch_up=policy, misfire_grace=grace)

    specs = [
        spec("none.fast", "none", "1s", 60),
        spec("latest.slow", "latest", "10s", 10),
        spec("all.slow", "all", "10s", 10),
        spec("latest.fast", "latest", "1s", 30),
        spec("all.huge", "all", "100ms", 604800),
        spec("all.fast", "all", "1s", 30),
        spec("all.slow2", "all", "10s", 10),
    ]
    ordered = [s.name for s in catchup.by_urgency(specs, NOW)]
    assert ordered == [
        "all.huge",
        "all.fast",
        "all.slow",
        "all.slow2",
        "latest.fast",
        "latest.slow",
        "none.fast",
    ]
