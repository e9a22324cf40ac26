"""Many jobs on one leader (issue 13), on the embedded backend with a stand-in for leadership:
fires due together are claimed in one call, the leader's threads stay bounded, a coalesced
fire is counted, the catch-up reads history in one ranged read, and a storm of claims in
doubt is retried with backoff, given up at misfire_grace and logged once per pass.

The backend is the real SQLite one; :class:`Counting` only counts the ledger calls made
through it and delegates every call. Each test names what it proved wrong before the change.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.sqlite import SqliteBackend
from scheduler.clock import FakeClock
from scheduler.errors import BackendUnavailable
from scheduler.firing import takeover
from scheduler.firing.claims import Claims, Fire
from scheduler.firing.runner import Runner
from scheduler.jobs.context import JobContext
from scheduler.jobs.spec import JobSpec, build_spec
from scheduler.leadership.lease import Lease
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.logs import get_logger
from tests.harness.replicas import wait_for
from tests.harness.stand_in import StandInElector

CLUSTER = "scale"
TIMINGS = LeaseTimings.of(30.0, None, None)
#: Ledger methods :class:`Counting` counts.
COUNTED = frozenset(
    {
        "claim",
        "claim_many",
        "start",
        "start_many",
        "finish",
        "finish_many",
        "history",
        "history_many",
        "claimed",
        "lookup",
    }
)


class Counting:
    """A real backend, counting the ledger calls made through it (a batch is one call), and
    how many fires each claim call carried. Everything is delegated as is."""

    def __init__(self, backend: SqliteBackend) -> None:
        self.backend = backend
        self.calls: Counter[str] = Counter()
        self.claim_sizes: list[int] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.backend, name)
        if name not in COUNTED:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.calls[name] += 1
                if name == "claim_many":
                    self.claim_sizes.append(len(args[1]))
                elif name == "claim":
                    self.claim_sizes.append(1)
            return attr(*args, **kwargs)

        return counted


def _noop(ctx: JobContext) -> None:
    """A job that does nothing."""


def _specs(count: int, func: Callable[[JobContext], None] = _noop, **options: Any) -> list[JobSpec]:
    return [build_spec(func, every="1h", name=f"scale.j{n:05d}", **options) for n in range(count)]


class Leader:
    """A runner leading on SQLite (real time; the fire loop is not started: the test hands
    fires to the lanes as APScheduler does, one call each)."""

    def __init__(self, tmp_path: Path, specs: list[JobSpec], **runner: Any) -> None:
        self.backend = Counting(SqliteBackend.from_url(f"sqlite:///{tmp_path}/b.db"))
        self.elector = StandInElector("r1", TIMINGS)
        self.runner = Runner(
            specs,
            self.elector,
            self.backend,  # type: ignore[arg-type]
            CLUSTER,
            replica_id=self.elector.holder.replica_id,
            timings=TIMINGS,
            metrics=self.elector.metrics,
            **runner,
        )
        lease = self.backend.try_acquire(CLUSTER, self.elector.holder, TIMINGS.lease_ttl)
        assert lease is not None
        self.term = Term(lease, TIMINGS, self.runner.clock)
        self.elector.term = self.term

    def hand_over(self, fire: datetime, names: Sequence[str]) -> None:
        """Hand ``fire`` to each job's lane, one call per job, as APScheduler's loop does."""
        for name in names:
            self.runner.lanes[name].submit([fire])

    def skipped(self, reason: str) -> float:
        """``baton_fires_skipped_total{reason}``."""
        value = self.elector.metrics.registry.get_sample_value(
            "baton_fires_skipped_total", {"reason": reason}
        )
        return value or 0.0

    def outcomes(self, names: Sequence[str], fire: datetime) -> Counter[str]:
        found: Counter[str] = Counter()
        for name in names:
            stored = self.backend.backend.lookup(CLUSTER, name, fire)
            found[stored.outcome if stored else "none"] += 1
        return found

    def close(self) -> None:
        if self.runner.accepting:
            self.runner.stop_firing()
        self.runner.wait_idle(10)
        self.runner.close()
        self.backend.backend.close()


@pytest.fixture
def leaders(tmp_path: Path) -> Iterator[Callable[..., Leader]]:
    made: list[Leader] = []

    def make(specs: list[JobSpec], **runner: Any) -> Leader:
        made.append(Leader(tmp_path, specs, **runner))
        return made[-1]

    yield make
    for leader in made:
        leader.close()


def _just_past() -> datetime:
    """An instant just past (whole second): due, well within misfire_grace."""
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)


# -- batched claims ---------------------------------------------------------------------------


def test_the_fires_of_one_instant_are_claimed_in_one_call(tmp_path: Path) -> None:
    """The claims layer claims 200 fires due together with one claim_many (before: 200
    claims, one round trip each) and starts them with one start_many."""
    backend = Counting(SqliteBackend.from_url(f"sqlite:///{tmp_path}/b.db"))
    elector = StandInElector("r1", TIMINGS)
    specs = _specs(200)
    claims = Claims(
        specs,
        elector,
        backend,  # type: ignore[arg-type]
        CLUSTER,
        replica_id="r1",
        timings=TIMINGS,
        metrics=elector.metrics,
        clock=FakeClock(wall=datetime.now(UTC)),
        log=get_logger(replica="r1"),
        wake=threading.Event(),
    )
    try:
        lease = backend.try_acquire(CLUSTER, elector.holder, TIMINGS.lease_ttl)
        assert lease is not None
        term = Term(lease, TIMINGS, FakeClock())
        fire = _just_past()
        claimed = claims.claim([Fire(spec.name, fire) for spec in specs], term)
        assert all(run is not None and run.outcome == "claimed" for run in claimed)
        assert (backend.calls["claim_many"], backend.calls["claim"]) == (1, 0)
        assert backend.claim_sizes == [200]
        started = claims.start_many([run for run in claimed if run is not None], term)
        assert all(run is not None and run.outcome == "running" for run in started)
        assert (backend.calls["start_many"], backend.calls["start"]) == (1, 0)
    finally:
        backend.backend.close()


def test_a_runner_claims_the_fires_handed_over_together_in_a_few_calls(
    leaders: Callable[..., Leader],
) -> None:
    """300 fires of one instant handed to the lanes one by one (as APScheduler does) are
    gathered: claimed in a handful of claim_many calls, started the same way, every one run
    once and its outcome stored (before: one claim, one start, one finish per fire)."""
    leader = leaders(_specs(300))
    names = [spec.name for spec in leader.runner.specs]
    fire = _just_past()
    leader.hand_over(fire, names)
    wait_for(lambda: leader.outcomes(names, fire)["ok"] == 300, 30, "every fire to run")
    assert sum(leader.backend.claim_sizes) == 300
    assert leader.backend.calls["claim"] == 0 and leader.backend.calls["claim_many"] <= 5
    assert leader.backend.calls["start"] == 0 and leader.backend.calls["start_many"] <= 5
    assert leader.backend.calls["finish"] == 0 and leader.backend.calls["finish_many"] <= 30


# -- a bounded pool ---------------------------------------------------------------------------


def test_the_leader_runs_2000_jobs_on_a_bounded_pool(leaders: Callable[..., Leader]) -> None:
    """2,000 jobs due at once that all block: the leader's threads stay at the pool's
    default (32) plus a handful, not one per job (before: a pool of N + 2 threads, and ~2,000
    of them busy); each job still runs once, never overlapping itself."""
    release = threading.Event()
    lock = threading.Lock()
    running: Counter[str] = Counter()
    most: dict[str, int] = {}

    def blocking(ctx: JobContext) -> None:
        with lock:
            running[ctx.job] += 1
            most[ctx.job] = max(most.get(ctx.job, 0), running[ctx.job])
        release.wait(30)
        with lock:
            running[ctx.job] -= 1

    before = threading.active_count()
    leader = leaders(_specs(2000, blocking))
    names = [spec.name for spec in leader.runner.specs]
    fire = _just_past()
    leader.hand_over(fire, names)
    # A second fire for every job while the first blocks: queued in the lane, not run beside.
    leader.hand_over(fire + timedelta(milliseconds=500), names)
    wait_for(lambda: sum(running.values()) >= 32, 30, "the pool to fill")
    grown = threading.active_count() - before
    assert grown <= 32 + 8, f"{grown} threads for 2,000 jobs"
    release.set()
    later = fire + timedelta(milliseconds=500)
    wait_for(lambda: leader.outcomes(names, later)["ok"] == 2000, 60, "every job to run twice")
    assert leader.outcomes(names, fire)["ok"] == 2000
    assert max(most.values()) == 1, "a job overlapped itself"
    assert threading.active_count() - before <= 32 + 8


# -- no fire disappears silently ----------------------------------------------------------------


def test_a_coalesced_fire_is_counted_and_summarised(leaders: Callable[..., Leader]) -> None:
    """A "latest" job busy while three more fires arrive keeps only the newest; the two it
    drops are counted (baton_fires_skipped_total{reason="coalesced"}) and named in the burst
    summary (before: dropped without a line, a record or a count)."""
    started, release = threading.Event(), threading.Event()

    def slow(ctx: JobContext) -> None:
        started.set()
        release.wait(30)

    with capture_logs() as logs:  # before the runner binds its logger
        leader = leaders(_specs(1, slow, catch_up="latest"))
        (name,) = [spec.name for spec in leader.runner.specs]
        first = _just_past() - timedelta(seconds=3)
        leader.hand_over(first, [name])
        assert started.wait(10)
        for seconds in (1, 2, 3):  # arrive while the first runs
            leader.hand_over(first + timedelta(seconds=seconds), [name])
        assert leader.skipped("coalesced") == 2
        release.set()
        newest = first + timedelta(seconds=3)
        wait_for(lambda: leader.outcomes([name], newest)["ok"] == 1, 10, "the newest fire")
        leader.runner.tally.summarise(force=True)
    summaries = [e for e in logs if e["event"] == "fires_summary"]
    assert sum(e["skipped"].get("coalesced", 0) for e in summaries) == 2
    assert any(e["log_level"] == "warning" and name in e["skipped_jobs"] for e in summaries)


# -- cheap recovery paths -----------------------------------------------------------------------


def _seed(backend: SqliteBackend, lease: Lease, names: Sequence[str], fire: datetime) -> None:
    """One finished run per job at ``fire``, claimed under ``lease``."""
    for name in names:
        run = RunRecord(name, fire, "r0", lease.token, started=fire)
        backend.claim(lease, run.finished("ok", fire), Retention())


@pytest.mark.parametrize(
    ("policies", "reads"),
    [
        ({"none": 50}, 1),  # the orphan scan only
        ({"none": 30, "latest": 30}, 1),
        ({"none": 20, "latest": 20, "all": 20}, 2),  # "all" reads its whole look-back apart
    ],
    ids=["none", "none+latest", "none+latest+all"],
)
def test_the_catch_up_reads_history_in_one_ranged_read(
    leaders: Callable[..., Leader],
    policies: dict[str, int],
    reads: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new leader's catch-up reads the history of a chunk of jobs together: history_many
    once (twice with catch_up="all" jobs), never history or claimed per job (before: one
    history read, and for "all" one claimed read, per job, also for catch_up="none"). A run
    a dead leader left running is still closed, also for a catch_up="none" job."""
    monkeypatch.setattr(takeover, "FIRST_CHUNK", takeover.CHUNK)  # these jobs: one chunk
    specs = [
        build_spec(_noop, every="1s", name=f"{policy}.j{n:03d}", catch_up=policy)
        for policy, count in policies.items()
        for n in range(count)
    ]
    leader = leaders(specs)
    names = [spec.name for spec in specs]
    ran = _just_past() - timedelta(seconds=5)
    _seed(leader.backend.backend, leader.term.lease, names, ran)
    orphan = RunRecord(names[0], ran + timedelta(seconds=1), "r0", 0, started=ran)
    leader.backend.backend.claim(leader.term.lease, orphan, Retention())
    leader.backend.backend.start(leader.term.lease, orphan.started_now(ran))
    leader.backend.calls.clear()

    queued = leader.runner.catch_up(leader.term)

    assert leader.backend.calls["history"] == 0 and leader.backend.calls["claimed"] == 0
    assert leader.backend.calls["history_many"] == reads
    caught_up = {name.split(".")[0] for name in queued}
    assert "none" not in caught_up and caught_up == set(policies) - {"none"}
    closed = leader.backend.backend.lookup(CLUSTER, orphan.job, orphan.scheduled_time)
    assert closed is not None and closed.outcome == "lost"


class Unanswered:
    """The embedded backend, where every claim goes unanswered and never lands (the link
    drops it); lookups answer. Counts lookups."""

    def __init__(self, backend: SqliteBackend) -> None:
        self.backend = backend
        self.lookups = 0

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        raise BackendUnavailable("sqlite://test", "no answer")

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        raise BackendUnavailable("sqlite://test", "no answer")

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        self.lookups += 1
        return self.backend.lookup(name, job, scheduled_time)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def test_a_storm_of_claims_in_doubt_is_bounded_and_logged_once_per_pass(tmp_path: Path) -> None:
    """100 fires whose claims go unanswered, settled by the maintenance loop every 0.25 s
    for a minute while every resend goes unanswered too: each is looked up with backoff
    (not 240 times), the failures are one line per batch (not one per fire per retry: the
    issue saw 18,509 lines), and all are given up at misfire_grace, counted as missed."""
    clock = FakeClock(wall=datetime(2026, 1, 1, tzinfo=UTC))
    backend = Unanswered(SqliteBackend.from_url(f"sqlite:///{tmp_path}/b.db", clock=clock))
    elector = StandInElector("r1", TIMINGS)
    specs = _specs(100, misfire_grace=30.0)
    with capture_logs() as logs:
        claims = Claims(
            specs,
            elector,
            backend,  # type: ignore[arg-type]
            CLUSTER,
            replica_id="r1",
            timings=TIMINGS,
            metrics=elector.metrics,
            clock=clock,
            log=get_logger(replica="r1"),
            wake=threading.Event(),
        )
        lease = backend.try_acquire(CLUSTER, elector.holder, TIMINGS.lease_ttl)
        assert lease is not None
        term = Term(lease, TIMINGS, clock)
        elector.term = term
        fire = clock.now()
        assert claims.claim([Fire(spec.name, fire) for spec in specs], term) == [None] * 100
        for _ in range(240):  # a minute of maintenance passes, each after a renewal
            clock.advance(0.25)
            elector.backend_ok = True
            settled = claims.settle()
            if settled.fires:
                claims.claim(settled.fires, term)  # the resends, as the lanes send them
        try:
            assert not claims.pending(), "claims still in doubt past misfire_grace"
        finally:
            backend.close()
    lines = Counter(e["event"] for e in logs)
    assert backend.lookups <= 100 * 20, f"{backend.lookups} lookups"
    assert lines["claim_failed"] <= 20, lines
    assert lines["claims_settled"] <= 20, lines
    missed = elector.metrics.registry.get_sample_value(
        "baton_fires_skipped_total", {"reason": "missed"}
    )
    assert missed == 100


def test_a_catch_up_chunk_that_fails_leaves_the_other_chunks_caught_up(
    leaders: Callable[..., Leader], monkeypatch: pytest.MonkeyPatch
) -> None:
    """History is read CHUNK jobs at a time: when one chunk's read fails (a ZooKeeper
    listing of thousands of jobs missed its op_timeout again and again in a chaos run, and
    no job was ever caught up), the other chunks' missed fires are still queued, and the
    catch-up is owed again for the term."""
    monkeypatch.setattr(takeover, "CHUNK", 10)
    monkeypatch.setattr(takeover, "FIRST_CHUNK", 10)
    specs = [build_spec(_noop, every="1s", name=f"all.j{n:03d}", catch_up="all") for n in range(30)]
    leader = leaders(specs)
    names = [spec.name for spec in specs]
    _seed(leader.backend.backend, leader.term.lease, names, _just_past() - timedelta(seconds=5))
    real = leader.backend.backend.history_many

    def second_chunk_fails(name: str, jobs: Iterable[str], limit: int) -> Any:
        wanted = list(jobs)
        if "all.j015" in wanted:
            raise BackendUnavailable(leader.backend.backend.url, "no answer (the test)")
        return real(name, wanted, limit)

    monkeypatch.setattr(leader.backend.backend, "history_many", second_chunk_fails)
    queued = leader.runner.catch_up(leader.term)

    assert set(queued) == set(names[:10] + names[20:])
    assert leader.runner.claims.pending(), "the catch-up is owed again"


def test_a_catch_up_cut_short_has_caught_up_the_jobs_with_most_at_stake_first(
    leaders: Callable[..., Leader], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catch-up reads the jobs most at risk first: catch_up="all" before "latest" before
    "none", and within a policy the jobs with the most fires in their look-back window. A
    term whose backend stops answering after the first chunk (a chaos run with 2,000 jobs:
    terms shorter than a whole catch-up) has still caught up the 1-second "all" job, although
    it is the last job defined (before: read in the last chunk, never caught up)."""
    monkeypatch.setattr(takeover, "CHUNK", 10)
    monkeypatch.setattr(takeover, "FIRST_CHUNK", 10)
    crowd = [
        build_spec(_noop, every="10s", name=f"crowd.j{n:03d}", catch_up=policy, misfire_grace=10)
        for n, policy in enumerate(["none", "latest", "all"] * 10)
    ]
    tick = build_spec(_noop, every="1s", name="tick", catch_up="all", misfire_grace=30)
    leader = leaders([*crowd, tick])
    _seed(leader.backend.backend, leader.term.lease, ["tick"], _just_past() - timedelta(seconds=5))
    real = leader.backend.backend.history_many
    read: list[list[str]] = []

    def only_the_first_chunk_answers(name: str, jobs: Iterable[str], limit: int) -> Any:
        wanted = list(jobs)
        read.append(wanted)
        if len(read) > 1:
            raise BackendUnavailable(leader.backend.backend.url, "no answer (the test)")
        return real(name, wanted, limit)

    monkeypatch.setattr(leader.backend.backend, "history_many", only_the_first_chunk_answers)
    queued = leader.runner.catch_up(leader.term)

    assert read[0][0] == "tick", read[0]
    assert all(
        job.startswith("crowd.") and job in {s.name for s in crowd if s.catch_up == "all"}
        for job in read[0][1:]
    ), read[0]
    assert len(queued.get("tick", [])) >= 4, queued
    assert leader.runner.claims.pending(), "the rest of the catch-up is owed again"


def test_catch_up_chunks_grow_from_a_small_first_one() -> None:
    """The first chunk is small (the most urgent jobs are read in one quick round trip), each
    next one twice as big, up to the most; every job exactly once, in order."""
    specs = [build_spec(_noop, every="1s", name=f"j{n:03d}") for n in range(100)]
    sizes = [len(chunk) for chunk in takeover.growing_chunks(specs, 8, 30)]
    assert sizes == [8, 16, 30, 30, 16]
    flat = [spec for chunk in takeover.growing_chunks(specs, 8, 30) for spec in chunk]
    assert flat == specs
    assert list(takeover.growing_chunks([], 8, 30)) == []
