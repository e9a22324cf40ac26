"""F11, reproduced step by step on every backend: a tick must never run twice when one term
proposes it twice and the second claim goes unanswered (see CHAOS.md, F11).

The chaos run (Redis, seed 84) that found it: r3's wall clock was 5 s behind; after a stall
r3 re-acquired leadership and its catch-up ran tick t; then its own trigger, late by its
clock, proposed t again in the same term; that claim timed out in a partition; once the
backend answered, recovery withdrew it by token — and deleted the record of the run of t
that had happened; the next leader ran t again.

Here the same sequence is driven by hand on the real runner and a real backend: the
runner's clock is a fake one 5 s behind real time (the server's clock), the link is cut by
the delay proxy (Redis, ZooKeeper) or a held write lock (SQLite) so the second claim — if it
is sent at all — times out, the term ends, and a second replica leads and catches up.
Only the elector is a stand-in (it says which term leads); the backend is never faked.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.backends import LeaseBackend, from_url
from scheduler.clock import FakeClock
from scheduler.firing.claims import Fire
from scheduler.firing.runner import Runner
from scheduler.jobs.context import JobContext
from scheduler.jobs.spec import build_spec
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from tests.chaos.proxy import Proxy, ProxyLoop
from tests.harness.redis_server import RedisServer
from tests.harness.stand_in import StandInElector
from tests.harness.zookeeper_server import ZooKeeperServer

TIMINGS = LeaseTimings.of(30.0, None, None)
OP_TIMEOUT = 0.5
BEHIND = timedelta(seconds=5)  # the runner's wall clock is this far behind the server's


@dataclass
class Link:
    """A backend URL whose link the test can cut (``cut``) and restore (``heal``)."""

    url: str
    direct_url: str
    cut: Callable[[], None]
    heal: Callable[[], None]


@pytest.fixture(params=["sqlite", "redis", "zookeeper"])
def link(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Link]:
    kind = request.param
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/baton.db"
        holder: list[sqlite3.Connection] = []

        def cut() -> None:  # a writer that holds the lock: every write times out
            conn = sqlite3.connect(tmp_path / "baton.db", isolation_level=None)
            conn.execute("BEGIN IMMEDIATE")
            holder.append(conn)

        def heal() -> None:
            while holder:
                conn = holder.pop()
                conn.rollback()
                conn.close()

        try:
            yield Link(url, url, cut, heal)
        finally:
            heal()
        return
    loop = ProxyLoop()
    if kind == "redis":
        server: RedisServer | ZooKeeperServer = request.getfixturevalue("redis_server")
        direct = server.url  # type: ignore[union-attr]
    else:
        server = request.getfixturevalue("zookeeper_server")
        direct = server.url(chroot=f"/f11-{time.monotonic_ns()}")  # type: ignore[union-attr, operator]
    proxy = Proxy(loop, server.port)
    try:
        yield Link(
            direct.replace(f":{server.port}/", f":{proxy.port}/"),
            direct,
            proxy.blackhole,
            proxy.heal,
        )
    finally:
        proxy.heal()
        proxy.close()
        loop.close()


class Replica:
    """A runner with its stand-in elector, on a fake clock, through ``url``."""

    def __init__(self, name: str, url: str, clock: FakeClock, job: Any, cluster: str) -> None:
        self.clock = clock
        self.cluster = cluster
        self.backend: LeaseBackend = from_url(url, op_timeout=OP_TIMEOUT, clock=clock)
        self.elector = StandInElector(name, TIMINGS)
        self.runner = Runner(
            [job],
            self.elector,
            self.backend,
            cluster,
            clock=clock,
            replica_id=self.elector.holder.replica_id,
            timings=TIMINGS,
            metrics=self.elector.metrics,
        )
        self.lane = self.runner.lanes[job.name]

    def lead(self) -> Term:
        lease = self.backend.try_acquire(self.cluster, self.elector.holder, TIMINGS.lease_ttl)
        assert lease is not None, "the lease should be free"
        self.elector.term = Term(lease, TIMINGS, self.clock)
        return self.elector.term

    def propose(self, *fires: datetime) -> None:
        """Hand ``fires`` to the lane (as the trigger or a catch-up does) and let it drain."""
        self.lane.submit(list(fires))
        assert self.lane.idle.wait(10), "the lane did not drain"

    def close(self) -> None:
        self.runner.pool.shutdown(wait=True)
        self.backend.close()


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


def _outcome(replica: Replica, fire: datetime) -> str | None:
    """The stored state of ``fire``'s record on ``replica``'s backend (``None``: no record)."""
    stored = replica.backend.lookup(replica.cluster, replica.lane.spec.name, fire)
    return None if stored is None else stored.outcome


def test_a_tick_proposed_twice_in_one_term_runs_once(link: Link, election: str) -> None:
    """Catch-up runs t, the trigger proposes t again in the same term while the link is cut,
    the term ends, a new leader catches up: t ran exactly once, its record intact."""
    ran: list[tuple[str, datetime]] = []
    lock = threading.Lock()

    def tick(ctx: JobContext) -> None:
        with lock:
            ran.append((ctx.replica_id, ctx.scheduled_time))

    job = build_spec(tick, every="1s", name="f11.tick", catch_up="all", misfire_grace=30.0)
    real = datetime.now(UTC).replace(microsecond=0)
    r1 = Replica("r1", link.url, FakeClock(wall=real - BEHIND), job, election)
    r2: Replica | None = None
    try:
        term = r1.lead()
        now = r1.clock.now()
        anchor, t = now - timedelta(seconds=2), now - timedelta(seconds=1)
        r1.propose(anchor)  # history for the catch-up to anchor on
        r1.runner.catch_up(term)  # catch-up: finds t unclaimed and runs it
        _wait(lambda: (("r1", t) in ran) and r1.lane.idle.is_set(), 10, "the catch-up to run t")
        # Outcomes are stored in batches just after the run: t's, before the link is cut.
        _wait(lambda: _outcome(r1, t) == "ok", 10, "t's outcome to be stored")

        link.cut()
        r1.propose(t)  # the trigger, late by its clock, proposes t again in the same term
        r1.elector.term = None  # deposed in the partition
        time.sleep(OP_TIMEOUT)  # a request given up on may still be in the cut link
        link.heal()
        r1.backend.release(term.lease)
        r1.runner.settle_claims()  # the backend answers: doubts are settled
        _wait(lambda: not r1.runner.claims.pending(), 10, "r1's doubts to settle")

        stored = r1.backend.lookup(election, job.name, t)
        assert stored is not None, "the record of t's run was deleted"
        assert (stored.replica_id, stored.outcome) == ("r1", "ok")

        r2 = Replica(
            "r2", link.direct_url, FakeClock(wall=real + timedelta(seconds=2)), job, election
        )
        r2.runner.catch_up(r2.lead())
        _wait(lambda: r2 is not None and r2.lane.idle.is_set(), 10, "r2's catch-up")
        runs_of_t = [replica for replica, fire in ran if fire == t]
        assert runs_of_t == ["r1"], f"tick t ran on {runs_of_t}"
    finally:
        link.heal()
        with contextlib.suppress(Exception):
            r1.close()
        if r2 is not None:
            r2.close()


def test_a_start_left_unanswered_still_runs_once_in_the_same_term(
    link: Link, election: str
) -> None:
    """The claim of t is answered, its start is not (the link is cut): once the backend
    answers, the term that still leads runs t — once — instead of dropping it as an
    attempt already made (found by a chaos run: seed 5909, Redis)."""
    ran: list[datetime] = []

    def tick(ctx: JobContext) -> None:
        ran.append(ctx.scheduled_time)

    job = build_spec(tick, every="1s", name="f11.start", catch_up="all", misfire_grace=30.0)
    real = datetime.now(UTC).replace(microsecond=0)
    r1 = Replica("r1", link.url, FakeClock(wall=real - BEHIND), job, election)
    try:
        term = r1.lead()
        t = r1.clock.now() - timedelta(seconds=1)
        (claimed,) = r1.runner.claims.claim([Fire(job.name, t)], term)  # t is 1 s late
        assert claimed is not None and claimed.outcome == "claimed"
        link.cut()
        assert r1.runner.claims.start(claimed, term) is None  # unanswered: not run
        link.heal()
        r1.elector.backend_ok = True
        r1.runner.settle_claims()  # the backend answers: the doubt is settled
        _wait(lambda: bool(ran) and r1.lane.idle.is_set(), 10, "t to run")
        assert ran == [t]

        # Outcomes are stored in batches, just after the run.
        _wait(lambda: _outcome(r1, t) not in (None, "running"), 10, "t's outcome to be stored")
        stored = r1.backend.lookup(r1.cluster, job.name, t)
        assert stored is not None and (stored.attempt, stored.outcome) == (claimed.attempt, "ok")
    finally:
        link.heal()
        r1.close()
