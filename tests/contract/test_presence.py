"""Contract: presence (announce, withdraw, members), on every backend kind."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from scheduler.backends import Backend
from scheduler.leadership.members import Member
from tests.harness.replicas import wait_for


def member(replica_id: str) -> Member:
    start = datetime(2026, 11, 1, tzinfo=UTC)
    return Member(replica_id, f"host-{replica_id}", "0.1.0", start, datetime.now(UTC))


def test_announce_lists_members_sorted_and_updates_in_place(
    make_backend: Callable[..., Backend], election: str
) -> None:
    """Announced replicas are listed by id; announcing again replaces the record."""
    backend = make_backend()
    backend.announce(election, member("r2"), 30)
    backend.announce(election, member("r1"), 30)
    first = backend.members(election)
    assert [m.replica_id for m in first] == ["r1", "r2"]
    assert first[0].host == "host-r1" and first[0].version == "0.1.0"
    time.sleep(0.01)  # a distinct last_seen, not a synchronisation
    backend.announce(election, member("r1"), 30)
    again = backend.members(election)
    assert [m.replica_id for m in again] == ["r1", "r2"]
    assert again[0].last_seen > first[0].last_seen
    assert backend.members(f"{election}-other") == []


def test_announced_job_names_round_trip(
    make_backend: Callable[..., Backend], election: str
) -> None:
    """The jobs a replica announces come back as announced (baton pause checks names with
    them); a record without a job list (an older replica) reads as "did not say"."""
    backend = make_backend()
    backend.announce(election, replace(member("r1"), jobs=("billing.reconcile", "a.b")), 30)
    backend.announce(election, member("r2"), 30)
    r1, r2 = backend.members(election)
    assert r1.jobs == ("billing.reconcile", "a.b")
    assert r2.jobs is None


def test_withdraw_removes_a_member_and_is_idempotent(
    make_backend: Callable[..., Backend], election: str
) -> None:
    """A withdrawn replica is gone at once; withdrawing twice is harmless."""
    backend = make_backend()
    backend.announce(election, member("r1"), 30)
    backend.announce(election, member("r2"), 30)
    backend.withdraw(election, "r1")
    backend.withdraw(election, "r1")
    assert [m.replica_id for m in backend.members(election)] == ["r2"]


def test_presence_of_a_silent_replica_expires(
    backend_kind: str, make_backend: Callable[..., Backend], election: str
) -> None:
    """A replica that stops announcing (or whose session ends) drops out of the list."""
    if backend_kind == "zookeeper":
        # Presence is an ephemeral node: it ends with the session, not with a TTL.
        dying = make_backend()
        dying.announce(election, member("r1"), 0.3)
        observer = make_backend()
        assert [m.replica_id for m in observer.members(election)] == ["r1"]
        dying.close()
    else:
        observer = make_backend()
        observer.announce(election, member("r1"), 0.3)
    wait_for(lambda: observer.members(election) == [], 30, "the presence to expire", 0.05)
