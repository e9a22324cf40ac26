"""Celery beat under faults (issue 16): Baton's BatonScheduler vs celery-redbeat's RedBeat.

For each contender, one run: three real ``celery beat`` processes and one ``celery worker``
on one redis-server (broker in db 0, Baton's backend in db 1, RedBeat's keys in db 2), an
entry every second (benchmarks/celery_beat_app.py) whose task appends each execution to a
SQLite ledger. Every beat reaches Redis (broker and scheduler alike) through a TCP proxy of
its own (tests/chaos/proxy.py); the worker connects directly. Each fault is injected into
the beat that sent last (the leader), ``repeats`` times in turn:

* ``kill -9`` of the leader;
* ``SIGSTOP`` of the leader for the lease/lock TTL plus :data:`HOLD_MARGIN`, then ``SIGCONT``;
* the leader cut from Redis (its proxy blackholed: bytes held, delivered after the heal) for
  as long, then healed.

Baton runs with ``lease_ttl`` = TTL and its default catch-up (``latest``); RedBeat with
``redbeat_lock_timeout`` = TTL and ``beat_max_loop_interval`` = 1 s (it extends the lock
once per wake, and a standby retries the lock that often). A beat that exited is restarted
(under a new name) after each fault, so every fault meets three beats.

The verdict is read from the ledger only (see :func:`analyse`).
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

from benchmarks.celery_beat_app import PERIOD
from benchmarks.procs import ROOT, stop, wait_for
from benchmarks.report import NO_TARGET, Section, Table, verdict
from benchmarks.stats import percentile
from tests.chaos.proxy import Proxy, ProxyLoop
from tests.harness.redis_server import RedisServer

TITLE = "10. Celery beat: Baton vs RedBeat under faults"
CELERY = str(Path(sys.executable).with_name("celery"))
APP = "benchmarks.celery_beat_app"
BATON = "Baton BatonScheduler"
REDBEAT = "celery-redbeat RedBeatScheduler (reference)"
SCHEDULERS = {
    BATON: "scheduler.integrations.celery:BatonScheduler",
    REDBEAT: "benchmarks.celery_beat_app:MeasuredRedBeatScheduler",
}
FAULTS = ("kill -9", "SIGSTOP", "cut from Redis")
#: Seconds a SIGSTOP or a cut lasts beyond the TTL.
HOLD_MARGIN = 2.0


@dataclass(frozen=True)
class Plan:
    """What one run injects.

    Attributes:
        ttl: seconds, Baton's ``lease_ttl`` and RedBeat's ``redbeat_lock_timeout`` (RedBeat's
            default is 5 x ``beat_max_loop_interval``: 25 minutes with Celery's 300 s).
        repeats: how many times each fault is injected.
        faults: the faults, in turn.
        settle: seconds after a fault ended (and again after a dead beat was restarted)
            before the next one; also how long after its end the victim must still run to
            count as alive.
        parallel: run both contenders at once (``--quick`` only: on 2 cores, one contender's
            start-up would slow the other's failover).
    """

    ttl: float = 5.0
    repeats: int = 3
    faults: tuple[str, ...] = FAULTS
    settle: float = 4.0
    parallel: bool = False


FULL = Plan()
#: ``--quick``: the cut only (it exercises the proxy and RedBeat's redbeat #129 shape).
QUICK = Plan(ttl=2.0, repeats=1, faults=("cut from Redis",), settle=1.5, parallel=True)
#: Seconds before a fault whose instants count as the fault's (a tick claimed just before).
LEAD_IN = 2 * PERIOD
#: Seconds to wait for the first sends (four Python processes importing Celery on 2 cores).
START_TIMEOUT = 60.0
#: Seconds the worker may take to execute what was sent before the ledger is read.
DRAIN_TIMEOUT = 15.0


@dataclass(frozen=True)
class Row:
    """One execution, as the task wrote it."""

    instant: datetime
    sent: float
    beat: str


@dataclass
class Fault:
    """One injected fault: its kind, victim, start and end (Unix time), and its outcome."""

    kind: str
    victim: str
    start: float
    end: float = 0.0
    recovered: float | None = None  # first send by another beat, or by the victim after `end`
    victim_alive: bool = True  # the victim process still ran when the next fault came

    def holds(self, instant: float) -> bool:
        """Whether ``instant`` is the fault's: from :data:`LEAD_IN` before it to as long
        after it ended, or after the next send, whichever is later."""
        last = max(self.end, self.recovered or self.end)
        return self.start - LEAD_IN <= instant <= last + LEAD_IN


@dataclass
class Outcome:
    """What the ledger says about one contender's run."""

    faults: list[Fault]
    duplicates: dict[str, int] = field(default_factory=Counter)  # per fault kind; "" outside
    missed: dict[str, int] = field(default_factory=Counter)
    executions: int = 0
    instants: int = 0


@dataclass
class Stack:
    """The redis-server, the proxy loop and the worker shared by both contenders."""

    workdir: Path
    redis: RedisServer = field(default_factory=RedisServer)
    loop: ProxyLoop = field(default_factory=ProxyLoop)
    worker: subprocess.Popen[bytes] | None = None

    @property
    def ledger(self) -> Path:
        return self.workdir / "ledger.db"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1",
                "BENCH_CELERY_BROKER": f"redis://127.0.0.1:{self.redis.port}/0",
                "BENCH_CELERY_LEDGER": str(self.ledger),
            }
        )
        return env

    def start(self) -> Stack:
        self.redis.start()
        self.worker = subprocess.Popen(
            [CELERY, "-A", APP, "worker", "--pool=solo", "-l", "warning", "--without-mingle",
             "--without-gossip", "--without-heartbeat"],
            env=self.env(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=(self.workdir / "worker.log").open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def close(self) -> None:
        if self.worker is not None:
            stop(self.worker, timeout=20)
        self.loop.close()
        self.redis.cleanup()

    def rows(self, entry: str) -> list[Row]:
        if not self.ledger.exists():
            return []
        conn = sqlite3.connect(self.ledger, timeout=10)
        try:
            found = conn.execute(
                "SELECT instant, sent, beat FROM runs WHERE entry = ? ORDER BY rowid", (entry,)
            ).fetchall()
        except sqlite3.OperationalError:  # the worker has not created the table yet
            return []
        finally:
            conn.close()
        return [
            Row(datetime.fromisoformat(instant), float(sent), beat)
            for instant, sent, beat in found
            if instant and sent is not None and beat
        ]


@dataclass
class Beat:
    """One ``celery beat`` process and the proxy it reaches Redis through."""

    name: str
    proxy: Proxy
    proc: subprocess.Popen[bytes]


@dataclass
class Beats:
    """Three beats of one contender, each behind its own proxy, for one entry."""

    stack: Stack
    contender: str
    ttl: float
    entry: str = field(default_factory=lambda: f"tick-{uuid.uuid4().hex[:8]}")
    slots: list[Beat] = field(default_factory=list)
    started: int = 0

    def _spawn(self, proxy: Proxy) -> Beat:
        self.started += 1
        name = f"beat-{self.started}"
        url = f"redis://127.0.0.1:{proxy.port}"
        env = self.stack.env()
        env.update(
            {
                "BENCH_CELERY_BROKER": f"{url}/0",
                "BENCH_CELERY_ENTRY": self.entry,
                "BENCH_CELERY_BEAT": name,
            }
        )
        if self.contender == BATON:
            env.update(
                {
                    "BATON_BACKEND": f"{url}/1",
                    "BATON_CLUSTER": self.entry,
                    "BATON_REPLICA_ID": name,
                    "BATON_LEASE_TTL": f"{self.ttl:g}",
                    "BATON_SHUTDOWN_GRACE": "2",
                }
            )
        else:
            env.update(
                {
                    "BENCH_REDBEAT_URL": f"{url}/2",
                    "BENCH_REDBEAT_LOCK_TIMEOUT": f"{self.ttl:.0f}",
                }
            )
        proc = subprocess.Popen(
            [CELERY, "-A", APP, "beat", "-S", SCHEDULERS[self.contender], "-l", "info"],
            env=env,
            cwd=self.stack.workdir,
            stdin=subprocess.DEVNULL,
            stdout=(self.stack.workdir / f"{self.entry}-{name}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        return Beat(name, proxy, proc)

    def start(self, count: int = 3) -> Beats:
        for _ in range(count):
            self.slots.append(self._spawn(Proxy(self.stack.loop, self.stack.redis.port)))
        return self

    def replace_dead(self) -> list[str]:
        """Restart every beat that exited (with a new name, behind its healed proxy)."""
        dead = []
        for i, beat in enumerate(self.slots):
            if beat.proc.poll() is not None:
                dead.append(beat.name)
                beat.proxy.heal()
                self.slots[i] = self._spawn(beat.proxy)
        return dead

    def by_name(self, name: str) -> Beat:
        return next(beat for beat in self.slots if beat.name == name)

    def rows(self) -> list[Row]:
        return self.stack.rows(self.entry)

    def wait_sends(self, since: float, count: int, timeout: float, what: str) -> list[Row]:
        def enough() -> list[Row] | None:
            rows = [row for row in self.rows() if row.sent > since]
            return rows if len(rows) >= count else None

        try:
            return wait_for(enough, timeout, what, interval=0.1)
        except TimeoutError as exc:
            raise TimeoutError(f"{self.contender}: {exc}; logs in {self.stack.workdir}") from None

    def stop(self) -> None:
        """SIGTERM every beat at once, then wait for each (SIGKILL after 20 s)."""
        for beat in self.slots:
            beat.proxy.heal()
            if beat.proc.poll() is None:
                os.kill(beat.proc.pid, signal.SIGCONT)
                os.kill(beat.proc.pid, signal.SIGTERM)
        for beat in self.slots:
            stop(beat.proc, timeout=20)
            beat.proxy.close()


def inject(beats: Beats, kind: str, victim: Beat) -> Callable[[], None]:
    """Start fault ``kind`` on ``victim``; returns what ends it (nothing for kill -9)."""
    if kind == "kill -9":
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        return lambda: None
    if kind == "SIGSTOP":
        os.kill(victim.proc.pid, signal.SIGSTOP)
        return lambda: os.kill(victim.proc.pid, signal.SIGCONT)
    victim.proxy.blackhole()
    return victim.proxy.heal


def run_contender(stack: Stack, contender: str, plan: Plan) -> Outcome:
    """Three beats of ``contender``; each fault ``plan.repeats`` times; the ledger analysed."""
    beats = Beats(stack, contender, plan.ttl).start()
    faults: list[Fault] = []
    try:
        began = time.time()
        beats.wait_sends(began, 2, START_TIMEOUT, "2 sends")
        planned = [kind for _ in range(plan.repeats) for kind in plan.faults]
        for n, kind in enumerate(planned, 1):
            faults.append(one_fault(beats, kind, plan, restart=n < len(planned)))
        end = time.time()
        drain(beats)
        return analyse(beats.rows(), faults, began, end)
    finally:
        beats.stop()


def one_fault(beats: Beats, kind: str, plan: Plan, restart: bool = True) -> Fault:
    """Inject ``kind`` into the beat that sent last; wait for the next leader's send; end it;
    with ``restart``, replace a beat that exited."""
    rows = beats.wait_sends(time.time(), 1, 10 * PERIOD, "a send before the fault")
    victim = beats.by_name(max(rows, key=lambda row: row.sent).beat)
    fault = Fault(kind, victim.name, time.time())
    end_fault = inject(beats, kind, victim)

    def taken_over() -> Row | None:
        late = [r for r in beats.rows() if r.sent > fault.start and r.beat != victim.name]
        return min(late, key=lambda row: row.sent) if late else None

    hold_until = fault.start + plan.ttl + HOLD_MARGIN
    with contextlib.suppress(TimeoutError):  # reported as no recovery
        wait_for(taken_over, 3 * plan.ttl + 30, f"a send after {kind}", interval=0.1)
    if kind != "kill -9":
        time.sleep(max(0.0, hold_until - time.time()))
    end_fault()
    fault.end = time.time()
    time.sleep(plan.settle)
    fault.victim_alive = victim.proc.poll() is None
    after = [
        r.sent
        for r in beats.rows()
        if r.sent > fault.start and (r.beat != victim.name or r.sent > fault.end)
    ]
    fault.recovered = min(after) if after else None
    if restart and beats.replace_dead():
        time.sleep(plan.settle)  # the new beat imports Celery and joins as a standby
    return fault


def drain(beats: Beats) -> None:
    """Wait until the ledger stops growing for two periods (or :data:`DRAIN_TIMEOUT`)."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    count, stable_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(beats.rows())
        if now != count:
            count, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since > 2 * PERIOD:
            return
        time.sleep(0.2)


def analyse(rows: list[Row], faults: list[Fault], began: float, end: float) -> Outcome:
    """Duplicates and missed instants, each attributed to the fault whose window holds it.

    An instant executed ``n`` times counts ``n - 1`` duplicates. Between two consecutive
    distinct instants ``a < b``, ``round((b - a) / PERIOD) - 1`` instants were never executed
    (at ``a + PERIOD``, ``a + 2 PERIOD``, ...). Only instants from ``began`` to ``end`` count.
    """
    outcome = Outcome(faults)
    counts = Counter(
        row.instant for row in rows if began <= row.instant.timestamp() <= end + PERIOD
    )
    outcome.executions = sum(counts.values())
    outcome.instants = len(counts)

    def kind_of(at: float) -> str:
        return next((fault.kind for fault in faults if fault.holds(at)), "")

    for instant, n in counts.items():
        outcome.duplicates[kind_of(instant.timestamp())] += n - 1
    ordered = sorted(instant.timestamp() for instant in counts)
    for a, b in itertools.pairwise(ordered):
        for k in range(1, round((b - a) / PERIOD)):
            outcome.missed[kind_of(a + k * PERIOD)] += 1
    return outcome


def seconds(values: list[float]) -> str:
    if not values:
        return "—"
    return f"{percentile(values, 50):.1f} s / {max(values):.1f} s"


def run(quick: bool, workdir: Path) -> Section:
    section = Section("celery", TITLE)
    plan = QUICK if quick else FULL
    stack = Stack(workdir).start()
    outcomes: dict[str, Outcome] = {}
    try:
        if plan.parallel:
            with ThreadPoolExecutor(2) as pool:
                futures = {c: pool.submit(run_contender, stack, c, plan) for c in SCHEDULERS}
                outcomes = {c: future.result() for c, future in futures.items()}
        else:
            outcomes = {c: run_contender(stack, c, plan) for c in SCHEDULERS}
    finally:
        stack.close()

    table = Table(
        ["Fault", "Contender", "Faults", "Duplicate executions", "Missed instants",
         "Fault → next send (p50 / max)", "Faulted beat alive after"]
    )  # fmt: skip
    for kind in plan.faults:
        for contender, outcome in outcomes.items():
            mine = [fault for fault in outcome.faults if fault.kind == kind]
            recovered = [f.recovered - f.start for f in mine if f.recovered is not None]
            table.add(
                kind,
                contender,
                len(mine),
                outcome.duplicates[kind],
                outcome.missed[kind],
                seconds(recovered) + ("" if len(recovered) == len(mine) else " (some never)"),
                f"{sum(f.victim_alive for f in mine)}/{len(mine)}",
            )
    for contender, outcome in outcomes.items():
        table.add(
            "none (between faults)",
            contender,
            "—",
            outcome.duplicates[""],
            outcome.missed[""],
            "—",
            "—",
        )
    totals = Table(["Contender", "Executions", "Distinct instants", "Duplicates", "Missed"])
    for contender, outcome in outcomes.items():
        totals.add(
            contender,
            outcome.executions,
            outcome.instants,
            sum(outcome.duplicates.values()),
            sum(outcome.missed.values()),
        )
    section.tables = [table, totals]
    section.method = [
        f"Per contender: 3 `celery beat` + 1 `celery worker --pool=solo` (Celery "
        f"{version('celery')}, celery-redbeat {version('celery-redbeat')}), one "
        f"redis-server (broker db 0, Baton db 1, RedBeat db 2); one entry every "
        f"{PERIOD:g} s; each fault {plan.repeats}x on the beat that sent last, in turn "
        f"{', '.join(plan.faults)}.",
        f"Baton: `lease_ttl` {plan.ttl:g} s, catch-up `latest` (its default). RedBeat: "
        f"`redbeat_lock_timeout` {plan.ttl:g} s (its default is 5 x `beat_max_loop_interval`), "
        f"`beat_max_loop_interval` {PERIOD:g} s (lock extended, and retried by a standby, "
        "that often).",
        f"SIGSTOP and cut last the TTL + {HOLD_MARGIN:g} s; a cut blackholes the beat's own "
        "TCP proxy (broker and scheduler connections alike: bytes held, delivered after the "
        "heal). A beat that exited is restarted after the fault.",
        "Instant of an execution: Baton's `baton_scheduled_time` header; RedBeat's, the "
        "instant the entry became due in the tick that sent it (the `last_run_at` read from "
        "Redis in that tick + 1 s, stamped into the message by a subclass that only records "
        "it). Celery's interval schedule restarts from each send, so RedBeat's instants are "
        "not on a whole-second grid.",
        "Duplicate executions: executions beyond the first of one instant, from the task's "
        "ledger. Missed instants: between consecutive executed instants a < b, "
        "round((b - a) / 1 s) - 1. Each is counted under the fault whose window "
        f"[fault - {LEAD_IN:g} s, max(fault end, next send) + {LEAD_IN:g} s] holds the "
        "instant, else under 'none'.",
        "Fault → next send: from the fault to the first send (publish time stamped by the "
        "sending beat) by another beat, or by the faulted one after the fault ended. "
        "'Faulted beat alive after': the process still ran "
        f"{plan.settle:g} s after the fault ended.",
    ]
    section.notes = [
        "Missed instants during a failover are expected of both (a new leader sends at most "
        "one catch-up tick under `latest`); Baton's `baton_catch_up: all` would send each "
        "missed instant late instead.",
        "A RedBeat beat that lost its lock exits at its next tick (LockNotOwnedError after "
        "SIGSTOP; a Redis TimeoutError when cut) and is restarted here, as a supervisor "
        "would; Baton's resumes as a follower. RedBeat duplicates only if the stale beat "
        "sends between its lock extend and its publish, or keeps ticking without Redis "
        "(redbeat #129, a DNS failure): neither happened in these runs.",
    ]
    if quick:
        section.notes.append(
            f"--quick: TTL {plan.ttl:g} s, {', '.join(plan.faults)} only, once, both "
            "contenders at once."
        )
    baton_dups = sum(outcomes[BATON].duplicates.values())
    section.summarize(
        "Celery beat duplicate executions (kill -9, SIGSTOP, cut)",
        str(baton_dups),
        f"{sum(outcomes[REDBEAT].duplicates.values())} (RedBeat)",
        "0 (Baton)",
        verdict(baton_dups == 0),
    )
    section.summarize(
        "Celery beat missed instants under the same faults",
        str(sum(outcomes[BATON].missed.values())),
        f"{sum(outcomes[REDBEAT].missed.values())} (RedBeat)",
        NO_TARGET,
        NO_TARGET,
    )
    return section
