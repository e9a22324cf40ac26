"""The election loop on a fake clock and the real embedded backend (a SQLite file in a tmp
dir): acquire, renew on time, give up at the renew deadline, stalls, resign.

Fake time moves only when a test says so; after each move the test waits (in real time,
bounded) for the outcome it expects and then for every loop thread to wait on the clock again
(:attr:`FakeClock.sleepers`), so that the next move finds the loop at rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler.backends import LeaseBackend, from_url
from scheduler.clock import FakeClock
from scheduler.leadership import controls
from scheduler.leadership.elector import Elector
from scheduler.leadership.events import TermEnded, TermEvent, TermStarted
from scheduler.leadership.lease import Holder
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.metrics import Metrics
from tests.harness.replicas import wait_for

#: Renew every 0.5 s, give up after 1.0 s: binary fractions, so fake instants add up exactly.
TIMINGS = LeaseTimings.of(1.5)
#: Renew every 2 s, give up after 4 s: room for a stall (over 1 s) before a renewal is due.
SLOW = LeaseTimings.of(6.0)
#: Real seconds a test waits for an outcome before it fails.
WAIT = 5.0
CLUSTER = "c"


class Rig:
    """Electors on one fake clock, each with its own backend object on one SQLite file."""

    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.url = f"sqlite:///{tmp_path}/baton.db"
        self.backends: list[LeaseBackend] = []
        self.electors: list[Elector] = []
        self.events: dict[str, list[TermEvent]] = {}
        self.metrics: dict[str, Metrics] = {}

    def backend(self) -> LeaseBackend:
        backend = from_url(self.url, op_timeout=0.25, clock=self.clock)
        self.backends.append(backend)
        return backend

    def elector(self, name: str, timings: LeaseTimings = TIMINGS) -> Elector:
        self.metrics[name] = Metrics()
        elector = Elector(
            self.backend(),
            CLUSTER,
            Holder.new(name),
            timings,
            self.clock,
            metrics=self.metrics[name],
        )
        self.events[name] = []
        elector.add_listener(self.events[name].append)
        self.electors.append(elector)
        return elector

    def count(self, name: str, metric: str, **labels: str) -> float:
        return self.metrics[name].registry.get_sample_value(metric, labels) or 0.0

    def renewals(self, name: str, result: str) -> float:
        return self.count(name, "baton_lease_renewals_total", result=result)

    def ended(self, name: str) -> list[str]:
        return [e.reason for e in self.events[name] if isinstance(e, TermEnded)]

    def settle(self, sleepers: int) -> None:
        """Wait until ``sleepers`` threads wait on the fake clock again."""
        wait_for(lambda: self.clock.sleepers == sleepers, WAIT, f"{sleepers} clock sleepers", 0.001)

    def lead(self, elector: Elector) -> Term:
        """Start ``elector``, wait for it to lead and rest; its term."""
        elector.start()
        term = wait_for(elector.current_term, WAIT, "leadership", 0.001)
        self.settle(2)  # the loop until its renewal, the watchdog until its tick
        return term

    def close(self) -> None:
        for elector in self.electors:
            elector.stop(timeout=0)
        for backend in self.backends:
            backend.close()  # also ends a follower's wait for a change
        for elector in self.electors:
            elector.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with capture_logs():  # quiet; tests that read the lines capture their own
        rig = Rig(tmp_path)
        try:
            yield rig
        finally:
            rig.close()


def test_acquires_on_start(rig: Rig) -> None:
    """A lone replica takes the free lease at once: one TermStarted, leader gauge 1."""
    elector = rig.elector("r1")
    term = rig.lead(elector)
    assert [type(e) for e in rig.events["r1"]] == [TermStarted]
    assert rig.events["r1"][0].term is term and term.token == 1
    assert term.lease.sent_at == rig.clock.monotonic()
    assert rig.count("r1", "baton_is_leader") == 1
    assert rig.count("r1", "baton_leader_transitions_total") == 1


def test_a_replica_that_leads_from_its_start_announces_itself_before_its_first_renewal(
    rig: Rig,
) -> None:
    """Presence is announced as soon as the first term began (before: only with the first
    renewal, a renew interval later, so a new leader had no presence record meanwhile)."""
    elector = rig.elector("r1", SLOW)
    rig.lead(elector)
    observer = rig.backend()
    assert [m.replica_id for m in observer.members(CLUSTER)] == ["r1"]
    assert rig.renewals("r1", "ok") == 0


def test_renews_each_renew_interval(rig: Rig) -> None:
    """No renewal before renew_interval has passed; then one per interval, each sent at the
    instant it fell due, in the same term."""
    elector = rig.elector("r1")
    term = rig.lead(elector)
    start = rig.clock.monotonic()
    rig.clock.advance(TIMINGS.renew_interval / 2)
    rig.settle(2)
    assert rig.renewals("r1", "ok") == 0
    rig.clock.advance(TIMINGS.renew_interval / 2)
    for n in range(1, 4):
        wait_for(lambda n=n: rig.renewals("r1", "ok") == n, WAIT, f"renewal {n}", 0.001)
        rig.settle(2)
        assert term.lease.sent_at == start + n * TIMINGS.renew_interval
        assert elector.current_term() is term
        rig.clock.advance(TIMINGS.renew_interval)
    assert rig.ended("r1") == []


def test_gives_up_at_the_renew_deadline_when_renewals_fail(rig: Rig) -> None:
    """Renewals that get no answer are retried until renew_deadline; at the deadline the
    replica stops leading (reason renew_deadline), before the lease could expire."""
    elector = rig.elector("r1")
    term = rig.lead(elector)
    start = rig.clock.monotonic()
    rig.backends[0].close()  # from now on every call fails: BackendUnavailable
    rig.clock.advance(TIMINGS.renew_interval)
    retry = TIMINGS.renew_interval / 4
    failed = 0
    while rig.clock.monotonic() < start + TIMINGS.renew_deadline:
        failed += 1
        wait_for(lambda n=failed: rig.renewals("r1", "error") == n, WAIT, "a failure", 0.001)
        rig.settle(2)
        assert elector.current_term() is term and not elector.backend_ok
        rig.clock.advance(retry)
    assert failed == 4  # at +0.5, +0.625, +0.75, +0.875
    assert elector.current_term() is None  # computed: no fire starts from here on
    wait_for(lambda: rig.ended("r1"), WAIT, "the end of the term", 0.001)
    assert rig.ended("r1") == ["renew_deadline"] and term.lost.is_set()
    assert rig.clock.monotonic() < term.lease.deadline
    assert rig.count("r1", "baton_leadership_lost_total", reason="renew_deadline") == 1


def test_a_stall_is_detected_and_revalidated_at_once(rig: Rig) -> None:
    """A clock jump longer than the stall threshold (a GC pause, SIGSTOP) is logged as a
    stall; the leader renews at once, before its renewal was due, and leads on."""
    with capture_logs() as logs:
        elector = rig.elector("r1", SLOW)
        term = rig.lead(elector)
        start = rig.clock.monotonic()
        rig.clock.advance(1.5)  # over the stall threshold (1 s), under renew_interval (2 s)
        wait_for(lambda: rig.renewals("r1", "ok") == 1, WAIT, "the re-validation", 0.001)
        rig.settle(2)
    names = [line["event"] for line in logs]
    stall = next(line for line in logs if line["event"] == "stall_detected")
    assert stall["seconds"] == 1.5 and stall["leading"] is True
    assert names.index("stall_detected") < names.index("lease_revalidated")
    assert term.lease.sent_at == start + 1.5  # not at start + renew_interval
    assert elector.stall_reason() is None and elector.current_term() is term


def test_after_a_stall_the_lease_is_not_trusted_until_a_renewal_confirms_it(rig: Rig) -> None:
    """After a stall whose re-validation gets no answer, the term is not over yet, but it
    is not trusted: no current term (no fire starts) until the backend confirms the lease."""
    elector = rig.elector("r1", SLOW)
    term = rig.lead(elector)
    rig.backends[0].close()
    rig.clock.advance(1.5)
    wait_for(lambda: rig.renewals("r1", "error") == 1, WAIT, "the re-validation attempt", 0.001)
    rig.settle(2)
    assert elector.stall_reason() == "process stalled; lease being re-validated"
    assert term.valid() and not term.lost.is_set()
    assert elector.current_term() is None and not elector.is_leader()
    assert rig.ended("r1") == []


def test_resign_hands_over_to_the_other_replica(rig: Rig) -> None:
    """``baton resign`` names the leader's token; the leader sees it with its controls at
    its next renewal, steps down (reason resigned) and clears the request; the follower
    takes over at once, with a higher token."""
    first = rig.elector("r1")
    first.on_resign_request(lambda term: first.resign())
    old = rig.lead(first)
    second = rig.elector("r2")
    second.start()  # a follower: waits for a change of the lease, not on the clock
    wait_for(lambda: second.presence.due() is False, WAIT, "the follower's presence", 0.001)
    operator = rig.backend()
    controls.request_resign(operator, CLUSTER, old.token)
    rig.clock.advance(TIMINGS.renew_interval)  # the leader's renewal, then its controls
    new = wait_for(second.current_term, WAIT, "the handover", 0.001)
    assert rig.ended("r1") == ["resigned"] and first.current_term() is None
    assert new.token > old.token
    assert [type(e) for e in rig.events["r2"]] == [TermStarted]
    wait_for(
        lambda: controls.read(operator, CLUSTER).resign_token is None,
        WAIT,
        "the request cleared",
        0.001,
    )
