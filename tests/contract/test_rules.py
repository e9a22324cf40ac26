"""The shared rules and vocabulary every backend uses (:mod:`scheduler.backends.rules`,
:mod:`scheduler.backends.states`), pinned without a backend. The backend-side half (each
backend obeys them) is in the role modules beside this one."""

from __future__ import annotations

import math

import pytest
from kazoo.client import KazooState

from scheduler.backends.rules import (
    FINISHED,
    MIN_TTL,
    TRIM_SCAN,
    TrimWindow,
    check_ttl,
    grant_expired,
    granted,
    select_trim,
    trim_window,
    trimmable,
    ttl_ms,
)
from scheduler.backends.runs import OUTCOMES, UNFINISHED, Retention
from scheduler.backends.states import ClaimRefusal, ConnectionState, LossReason
from scheduler.leadership.lease import Holder, local_deadline

# --- trimming -------------------------------------------------------------------------------


def test_finished_outcomes_are_exactly_the_ended_ones() -> None:
    """Trimming may delete ok/error/lost and never claimed/running (or an unreadable record)."""
    assert set(FINISHED) == {"ok", "error", "lost"}
    assert set(FINISHED) | set(UNFINISHED) == set(OUTCOMES)
    assert all(trimmable(o) for o in FINISHED)
    assert not any(trimmable(o) for o in (*UNFINISHED, None, "bogus"))


def test_window_is_the_excess_over_the_limit_below_the_protect_cutoff() -> None:
    """The window holds the records beyond the limit, the new claim counted; its cutoff is
    the claimed fire less ``protect``; never negative, at most ``scan``."""
    assert trim_window(8, 60_000, Retention(limit=3, protect=4.5)) == TrimWindow(5, 55_500)
    assert trim_window(3, 60_000, Retention(limit=3)) == TrimWindow(0, 60_000)
    assert trim_window(1, 60_000, Retention(limit=100)).count == 0
    assert trim_window(5, 0, Retention(limit=-2)).count == 5  # a negative limit counts as 0
    assert trim_window(5000, 0, Retention(limit=1)).count == TRIM_SCAN
    assert trim_window(5000, 0, Retention(limit=1), scan=None).count == 4999


def test_select_trim_keeps_the_newest_limit() -> None:
    """With nothing protected and everything finished, the oldest beyond the limit go."""
    records = {key: "ok" for key in range(0, 8000, 1000)}
    assert select_trim(records, 8000, Retention(limit=3)) == [0, 1000, 2000, 3000, 4000, 5000]


def test_select_trim_never_reaches_into_the_protect_window() -> None:
    """Fires within ``protect`` seconds before the claimed one stay, whatever the limit."""
    records = {key: "ok" for key in range(0, 7000, 1000)}
    assert select_trim(records, 7000, Retention(limit=2, protect=4.5)) == [0, 1000, 2000]


def test_select_trim_keeps_unfinished_records_in_their_place() -> None:
    """An unfinished candidate stays and still fills its place in the window: the window
    does not reach further to make up for it."""
    records = {0: "claimed", 1000: "running", 2000: "ok", 3000: "ok", 4000: "error"}
    assert select_trim(records, 5000, Retention(limit=3)) == [2000]
    assert select_trim({**records, 0: None}, 5000, Retention(limit=3)) == [2000]


def test_select_trim_counts_the_new_claim_once() -> None:
    """The claimed key counts whether the mapping has it or not, and is never its own victim."""
    records = {0: "ok", 1000: "ok"}
    assert select_trim(records, 2000, Retention(limit=2)) == [0]
    assert select_trim({**records, 2000: "claimed"}, 2000, Retention(limit=2)) == [0]
    assert select_trim({2000: "ok"}, 2000, Retention(limit=0)) == []


def test_select_trim_looks_at_no_more_than_scan_candidates() -> None:
    """A long backlog goes over several claims: at most ``scan`` candidates per claim."""
    records = {key: "ok" for key in range(10)}
    assert select_trim(records, 100, Retention(limit=1), scan=3) == [0, 1, 2]


# --- TTLs and grants ---------------------------------------------------------------------------


@pytest.mark.parametrize("ttl", [0.0, -1.0, MIN_TTL / 2, math.nan, math.inf])
def test_unusable_ttls_are_refused(ttl: float) -> None:
    """A TTL must be a finite number of at least a millisecond."""
    with pytest.raises(ValueError, match="lease ttl"):
        check_ttl(ttl)


def test_ttl_in_milliseconds_is_at_least_one() -> None:
    """Servers take whole milliseconds: the smallest TTL is 1 ms, others are rounded."""
    assert check_ttl(MIN_TTL) == MIN_TTL
    assert ttl_ms(MIN_TTL) == 1
    assert ttl_ms(10.0) == 10_000
    assert ttl_ms(0.0016) == 2


def test_a_grant_counts_from_the_send_time() -> None:
    """A granted lease's deadline is the local deadline of its request's send time."""
    who = Holder.new("r1")
    lease = granted("c", who, 7, 10.0, 100.0, handle="/latch/n")
    assert (lease.name, lease.holder, lease.token, lease.ttl) == ("c", who, 7, 10.0)
    assert (lease.sent_at, lease.handle) == (100.0, "/latch/n")
    assert lease.deadline == local_deadline(100.0, 10.0) < 110.0


def test_a_stored_grant_expires_at_its_expiry_or_when_too_far_ahead() -> None:
    """Expired at or after its expiry; also when it lies further ahead than its own TTL,
    which no reading of the same clock can produce (the clock restarted)."""
    assert not grant_expired(110.0, 10.0, 100.0)
    assert not grant_expired(110.0, 10.0, 109.9)
    assert grant_expired(110.0, 10.0, 110.0)
    assert grant_expired(110.0, 10.0, 200.0)
    assert grant_expired(110.0, 10.0, 99.0)


# --- vocabulary ------------------------------------------------------------------------------


def test_loss_reasons_keep_the_strings_they_replaced() -> None:
    """Every reason equals the string logs, metric labels and comparisons used before."""
    assert {reason.value for reason in LossReason} == {
        "expired",
        "not-holder",
        "stale-token",
        "released",
        "connection-suspended",
        "session-expired",
        "node-deleted",
        "node-modified",
        "shutdown",
        "resigned",
        "renew_deadline",
        "backend_refused",
    }
    assert LossReason.RENEW_DEADLINE == "renew_deadline"
    assert f"{LossReason.NOT_HOLDER}" == str(LossReason.NOT_HOLDER) == "not-holder"


def test_only_shutdown_and_resign_are_voluntary() -> None:
    """The replica's own decisions are not losses to react to; everything else is."""
    assert {r for r in LossReason if r.voluntary} == {LossReason.SHUTDOWN, LossReason.RESIGNED}


def test_claim_refusals_keep_their_strings() -> None:
    """ClaimLost reasons are the three words start() has always used."""
    assert [r.value for r in ClaimRefusal] == ["gone", "other-attempt", "not-claimed"]


def test_connection_states_use_kazoos_names() -> None:
    """kazoo's three states map onto the vocabulary by value; RECONNECTED is Curator's."""
    for state in (KazooState.CONNECTED, KazooState.SUSPENDED, KazooState.LOST):
        assert ConnectionState(str(state)).value == str(state)
    assert ConnectionState.RECONNECTED == "RECONNECTED"
