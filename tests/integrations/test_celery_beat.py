"""Baton as Celery's beat, on real parts: a redis-server (the broker in db 0, Baton's backend
in db 1), a real ``celery worker`` and three real ``celery beat`` processes with
``BatonScheduler``. The one entry fires every second (``baton_catch_up: all``) and its task
appends what its Baton headers say to a SQLite ledger: the verdict is read there, not in
Baton's records.

What every test demands: every instant executed at most once, every execution sent by Baton
(headers present), tokens never going back as instants advance, and every instant from the
first one to the end executed, except those within :data:`FAULT_WINDOW` of an injected fault
(a ``kill -9`` or a SIGSTOP can take the leader down between a tick's claim and its send:
that tick is lost, never repeated). A graceful stop may lose only a tick that Baton's records
show started and not yet called when the replica shut down (README, "Logs").

The cut from the backend puts each beat's link to Baton's backend behind a TCP proxy of its
own (tests/chaos/proxy.py, as benchmarks/celery_beat.py does) and blackholes the leader's;
its broker link stays up: the dangerous case, a deposed beat that can still publish.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.backends import from_url
from scheduler.backends.runs import RunRecord
from scheduler.firing.execution import NOT_CALLED_SHUTDOWN
from tests.chaos.proxy import Proxy, ProxyLoop
from tests.harness.redis_server import RedisServer
from tests.harness.replicas import ROOT, wait_for

pytestmark = pytest.mark.slow

CELERY = str(Path(sys.executable).with_name("celery"))
APP = "tests.integrations.celery_app"
SCHEDULER = "scheduler.integrations.celery:BatonScheduler"
TICK = timedelta(seconds=1)
#: Seconds; short, so that a crashed leader's lease expires quickly.
LEASE_TTL = 3
#: Instants this close to a fault (either side) may be lost: a leader may claim a tick up to
#: 0.5 s ahead and send it a little late on a loaded machine, then die before sending.
FAULT_WINDOW = timedelta(seconds=2)
#: Seconds to wait for the first sends (four Python processes importing Celery on 2 cores).
START_TIMEOUT = 60.0
#: Seconds to wait for a new leader's sends after a fault (the lease expires after LEASE_TTL).
FAILOVER_TIMEOUT = 30.0
#: Seconds the worker may take to execute what was sent before the check.
DRAIN_TIMEOUT = 15.0
#: Seconds a cut from the backend lasts beyond the lease TTL.
HOLD_MARGIN = 2.0


@dataclass(frozen=True)
class Row:
    """One execution of the task, as it wrote it."""

    scheduled: datetime | None
    token: int | None
    replica: str | None
    key: str | None
    sent: float | None  # Unix time of the publish, stamped by the beat that sent it


@dataclass
class Stack:
    """The redis-server and the worker shared by the module's tests."""

    redis: RedisServer
    worker: subprocess.Popen[bytes]
    ledger: Path
    workdir: Path

    @property
    def base_url(self) -> str:
        return self.redis.url.rsplit("/", 1)[0]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
                "CELERY_TEST_BROKER": f"{self.base_url}/0",
                "CELERY_TEST_LEDGER": str(self.ledger),
            }
        )
        return env

    def rows(self, entry: str) -> list[Row]:
        if not self.ledger.exists():
            return []
        conn = sqlite3.connect(self.ledger, timeout=10)
        try:
            found = conn.execute(
                "SELECT scheduled, token, replica, key, sent FROM runs WHERE entry = ?"
                " ORDER BY rowid",
                (entry,),
            ).fetchall()
        except sqlite3.OperationalError:  # the worker has not created the table yet
            return []
        finally:
            conn.close()
        return [
            Row(datetime.fromisoformat(s) if s else None, token, replica, key, sent)
            for s, token, replica, key, sent in found
        ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("celery")
    redis = RedisServer().start()
    worker = None
    try:
        partial = Stack(redis, None, workdir / "ledger.db", workdir)  # type: ignore[arg-type]
        worker = subprocess.Popen(
            [
                CELERY,
                "-A",
                APP,
                "worker",
                "--pool=solo",
                "-l",
                "warning",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
            ],
            env=partial.env(),
            cwd=workdir,
            stdout=(workdir / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        partial.worker = worker
        yield partial
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        redis.cleanup()


@dataclass
class Beats:
    """Three ``celery beat`` processes for one entry, in a Baton cluster of their own."""

    stack: Stack
    workdir: Path
    entry: str = field(default_factory=lambda: f"tick-{uuid.uuid4().hex[:8]}")
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: Baton's backend URL per beat name; a beat not named here reaches Redis directly.
    backends: dict[str, str] = field(default_factory=dict)

    def start(self, count: int = 3) -> Beats:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for n in range(1, count + 1):
            name = f"beat-{n}"
            env = self.stack.env()
            env.update(
                {
                    "CELERY_TEST_ENTRY": self.entry,
                    "BATON_BACKEND": self.backends.get(name, f"{self.stack.base_url}/1"),
                    "BATON_CLUSTER": self.entry,
                    "BATON_REPLICA_ID": name,
                    "BATON_LEASE_TTL": str(LEASE_TTL),
                    "BATON_SHUTDOWN_GRACE": "5",
                }
            )
            self.procs[name] = subprocess.Popen(
                [CELERY, "-A", APP, "beat", "-S", SCHEDULER, "-l", "info"],
                env=env,
                cwd=self.workdir,
                stdout=(self.workdir / f"{name}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        return self

    def rows(self) -> list[Row]:
        return self.stack.rows(self.entry)

    def wait_rows(self, count: int, timeout: float, what: str, since: datetime) -> list[Row]:
        """Wait until ``count`` executions of instants after ``since`` are in the ledger."""

        def enough() -> list[Row] | None:
            rows = self.rows()
            later = [r for r in rows if r.scheduled is not None and r.scheduled > since]
            return rows if len(later) >= count else None

        try:
            return wait_for(enough, timeout, what, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def records(self) -> list[RunRecord]:
        """Baton's own run records of the entry, newest first."""
        backend = from_url(f"{self.stack.base_url}/1", op_timeout=2.0)
        try:
            return backend.history(self.entry, self.entry, 100)
        finally:
            backend.close()

    def history(self, instants: list[datetime]) -> str:
        """Baton's own records of ``instants`` (for a failure message)."""
        wanted = set(instants)
        runs = [str(run) for run in self.records() if run.scheduled_time in wanted]
        return "\n".join(runs) + self.logs()

    def logs(self) -> str:
        return (
            "\n".join(
                f"--- {name}\n{(self.workdir / f'{name}.log').read_text(errors='replace')[-3000:]}"
                for name in self.procs
            )
            + f"\n--- worker\n{(self.stack.workdir / 'worker.log').read_text()[-2000:]}"
        )


@pytest.fixture
def beats(stack: Stack, tmp_path: Path) -> Iterator[Beats]:
    group = Beats(stack, tmp_path / "beats")
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
def proxied_beats(stack: Stack, tmp_path: Path) -> Iterator[tuple[Beats, dict[str, Proxy]]]:
    """Three beats, each reaching Baton's backend through its own proxy (the broker directly)."""
    loop = ProxyLoop()
    proxies = {f"beat-{n}": Proxy(loop, stack.redis.port) for n in range(1, 4)}
    group = Beats(
        stack,
        tmp_path / "beats",
        backends={name: f"redis://127.0.0.1:{p.port}/1" for name, p in proxies.items()},
    )
    try:
        yield group, proxies
    finally:
        for proxy in proxies.values():
            proxy.heal()
        group.stop()
        for proxy in proxies.values():
            proxy.close()
        loop.close()


def settle(
    beats: Beats,
    first: datetime,
    last: datetime,
    faults: list[datetime],
    shutdown_lost_ok: bool = False,
) -> list[Row]:
    """Wait until the worker has executed every instant from ``first`` to ``last`` outside
    the fault windows (or :data:`DRAIN_TIMEOUT` passed), then check the ledger.

    With ``shutdown_lost_ok``, an instant Baton recorded ``lost`` because its replica shut
    down between the start and the call of its job (README, "Logs": ``shutdown``) is not
    counted as missing: the one documented loss of a graceful stop.

    Returns:
        The ledger's rows for the entry.
    """

    def expected() -> set[datetime]:
        instants, at = set(), first
        while at <= last:
            if not any(abs(at - fault) <= FAULT_WINDOW for fault in faults):
                instants.add(at)
            at += TICK
        return instants

    def complete() -> list[Row] | None:
        rows = beats.rows()
        return rows if expected() <= {r.scheduled for r in rows} else None

    with contextlib.suppress(AssertionError):  # reported below, with what is missing
        wait_for(complete, DRAIN_TIMEOUT, "every instant executed", interval=0.1)
    rows = beats.rows()
    assert all(r.token is not None and r.scheduled is not None for r in rows), (
        "a task ran without Baton's headers: beat itself sent it"
    )
    counts = Counter(r.scheduled for r in rows)
    twice = sorted(str(at) for at, n in counts.items() if n > 1)
    assert not twice, f"instants executed more than once: {twice}"
    ordered = sorted(rows, key=lambda r: r.scheduled or first)
    for before, after in itertools.pairwise(ordered):
        assert (before.token or 0) <= (after.token or 0), f"token went back: {before} -> {after}"
    for row in rows:
        assert row.key == f"{beats.entry}:{row.scheduled.isoformat() if row.scheduled else ''}"
    missing = sorted(expected() - set(counts))
    if shutdown_lost_ok and missing:
        lost = {
            run.scheduled_time
            for run in beats.records()
            if run.outcome == "lost" and run.message == NOT_CALLED_SHUTDOWN
        }
        missing = [at for at in missing if at not in lost]
    assert not missing, f"instants never executed: {missing}\n{beats.history(missing)}"
    return rows


def test_steady_state_and_graceful_handover(beats: Beats) -> None:
    """Three beats send each instant once, from one leader; SIGTERM hands over losing none."""
    start = datetime.now(UTC)
    rows = beats.start().wait_rows(4, START_TIMEOUT, "4 sends", since=start)
    leader = rows[-1].replica
    assert leader is not None
    assert {r.replica for r in rows} == {leader}, "more than one beat sent while none failed"
    first = min(r.scheduled for r in rows if r.scheduled is not None)
    stopped = datetime.now(UTC)
    beats.procs[leader].terminate()
    assert beats.procs[leader].wait(timeout=20) == 0
    rows = beats.wait_rows(3, FAILOVER_TIMEOUT, "3 sends by the next leader", since=stopped)
    successor = {r.replica for r in rows if r.scheduled and r.scheduled > stopped}
    assert leader not in successor and len(successor) == 1
    last = max(r.scheduled for r in rows if r.scheduled is not None)
    settle(beats, first, last, faults=[], shutdown_lost_ok=True)  # nothing else is lost
    assert not list(beats.workdir.glob("celerybeat-schedule*")), "beat's state file was used"


def test_kill9_of_the_leader_beat(beats: Beats) -> None:
    """kill -9 of the leading beat: another takes over after the lease; nothing runs twice."""
    start = datetime.now(UTC)
    rows = beats.start().wait_rows(3, START_TIMEOUT, "3 sends", since=start)
    leader = rows[-1].replica
    assert leader is not None
    first = min(r.scheduled for r in rows if r.scheduled is not None)
    killed = datetime.now(UTC)
    beats.procs[leader].kill()
    beats.procs[leader].wait()
    rows = beats.wait_rows(4, FAILOVER_TIMEOUT, "4 sends after the kill", since=killed)
    after = {r.replica for r in rows if r.scheduled and r.scheduled > killed + FAULT_WINDOW}
    assert after and leader not in after
    last = max(r.scheduled for r in rows if r.scheduled is not None)
    settle(beats, first, last, faults=[killed])


def test_sigstop_of_the_leader_past_its_lease(beats: Beats) -> None:
    """A leader frozen past its lease is replaced; once resumed it sends nothing more."""
    start = datetime.now(UTC)
    rows = beats.start().wait_rows(3, START_TIMEOUT, "3 sends", since=start)
    leader = rows[-1].replica
    assert leader is not None
    first = min(r.scheduled for r in rows if r.scheduled is not None)
    frozen = datetime.now(UTC)
    beats.procs[leader].send_signal(signal.SIGSTOP)
    rows = beats.wait_rows(
        2, FAILOVER_TIMEOUT, "sends by a new leader", since=frozen + FAULT_WINDOW
    )
    beats.procs[leader].send_signal(signal.SIGCONT)
    resumed = datetime.now(UTC)
    rows = beats.wait_rows(3, FAILOVER_TIMEOUT, "3 sends after the resume", since=resumed)
    last = max(r.scheduled for r in rows if r.scheduled is not None)
    rows = settle(beats, first, last, faults=[frozen])
    late = [r for r in rows if r.replica == leader and r.scheduled and r.scheduled > frozen + TICK]
    assert not late, f"the resumed beat sent after its lease was gone: {late}"
    assert beats.procs[leader].poll() is None, "the resumed beat died instead of following"


def test_a_leader_cut_from_the_backend_sends_nothing_and_another_takes_over(
    proxied_beats: tuple[Beats, dict[str, Proxy]],
) -> None:
    """A leader cut from Baton's backend past its lease, its broker still reachable, sends
    nothing after the lease's deadline; another beat takes over; nothing runs twice."""
    beats, proxies = proxied_beats
    start = datetime.now(UTC)
    rows = beats.start().wait_rows(3, START_TIMEOUT, "3 sends", since=start)
    assert all(r.sent is not None for r in rows), "a send without its publish time"
    leader, term = rows[-1].replica, rows[-1].token
    assert leader is not None and term is not None
    first = min(r.scheduled for r in rows if r.scheduled is not None)
    cut = datetime.now(UTC)
    proxies[leader].blackhole()
    cut_at = time.time()
    # The lease was renewed before the cut at the latest: it is gone by then, whatever the
    # leader believes.
    deadline = cut_at + LEASE_TTL

    def taken_over() -> list[Row] | None:
        late = [r for r in beats.rows() if r.replica != leader and (r.sent or 0) > cut_at]
        return late if len(late) >= 2 else None

    try:
        wait_for(taken_over, FAILOVER_TIMEOUT, "2 sends by another beat during the cut", 0.1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{beats.logs()}") from None
    time.sleep(max(0.0, deadline + HOLD_MARGIN - time.time()))
    proxies[leader].heal()
    healed_at = time.time()
    healed = datetime.now(UTC)
    rows = beats.wait_rows(3, FAILOVER_TIMEOUT, "3 sends after the heal", since=healed)
    last = max(r.scheduled for r in rows if r.scheduled is not None)
    rows = settle(beats, first, last, faults=[cut])

    # After its deadline the cut beat may send again only as a new leader: after the heal,
    # under a higher token.
    stale = [
        r
        for r in rows
        if r.replica == leader
        and r.sent is not None
        and r.sent > deadline
        and (r.sent <= healed_at or (r.token or 0) <= term)
    ]
    assert not stale, (
        f"the cut beat sent after its lease's deadline ({deadline:.3f}, cut at {cut_at:.3f}, "
        f"healed at {healed_at:.3f}): {stale}\n{beats.logs()}"
    )
    successor = [r for r in rows if r.replica != leader and (r.sent or 0) > cut_at]
    assert successor, "no other beat sent during the cut"
    assert all((r.token or 0) > term for r in successor), (
        f"another beat sent under a token not above the cut leader's {term}: {successor}"
    )
    assert beats.procs[leader].poll() is None, "the cut beat died instead of following"
