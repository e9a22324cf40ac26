"""The per-term attempt ledger (scheduler/firing/claims.py) on a fake clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from scheduler.clock import FakeClock
from scheduler.firing.claims import Attempts

FIRE = datetime(2026, 1, 1, tzinfo=UTC)


def test_one_attempt_per_fire_per_term() -> None:
    """A fire proposed twice in one term gets one attempt; a new term gets its own."""
    attempts = Attempts(FakeClock().monotonic, keep=60)
    assert attempts.first(7, "job", FIRE)
    assert not attempts.first(7, "job", FIRE)
    assert not attempts.first(7, "job", FIRE + timedelta(microseconds=300))  # same ms key
    assert attempts.first(7, "job", FIRE + timedelta(seconds=1))
    assert attempts.first(7, "other", FIRE)
    assert attempts.first(8, "job", FIRE)  # a new term
    assert not attempts.first(8, "job", FIRE)


def test_entries_are_forgotten_only_after_keep_seconds() -> None:
    """Entries age on the monotonic clock; a wall-clock step cannot make one forgotten."""
    clock = FakeClock()
    attempts = Attempts(clock.monotonic, keep=60)
    assert attempts.first(1, "job", FIRE)
    clock.advance(59)
    assert not attempts.first(1, "job", FIRE)
    clock.advance(120)
    attempts.first(1, "job", FIRE + timedelta(seconds=500))  # prunes
    assert attempts.first(1, "job", FIRE)


def test_an_attempt_is_started_once() -> None:
    """The last guard: the job of one attempt is never started twice by this replica."""
    attempts = Attempts(FakeClock().monotonic, keep=60)
    assert not attempts.started("a1")
    assert attempts.start("a1")
    assert attempts.started("a1")
    assert not attempts.start("a1")
    assert attempts.start("a2")
