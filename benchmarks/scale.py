"""Many jobs on one leader (issue 13): N jobs due at one instant, Baton vs bare APScheduler 3.

For each case (backend, N) the harness starts a fresh server on 127.0.0.1 (SQLite: a fresh
file), bare APScheduler 3 with N interval jobs in its own process (``benchmarks.bare_scale``),
then two Baton replicas running N jobs ``every="10s"`` (``benchmarks.scale_jobs``). All N jobs
of a scheduler fall due at the same instant: Baton's at multiples of 10 s since the epoch,
the reference's 5 s later, so the two bursts do not coincide. After a warm-up burst it
measures ``bursts`` bursts of each:

* lateness (job start minus instant) p50/p99/max and burst duration (last start minus
  instant), from the line each run appends to its process's file;
* fires run / expected (distinct (job, instant) pairs) and duplicates;
* CPU seconds per burst of Baton's leader and of the reference: utime+stime from
  /proc/<pid>/stat over the period around each burst (1 s before its instant to 1 s before
  the next one, so it includes the idle work of the period);
* RSS and threads, the maximum of /proc/<pid>/status samples every 0.5 s;
* backend round trips and commands per fire: Redis ``INFO`` deltas over Baton's periods
  (``total_reads_processed``: read events on client sockets, so a pipeline or a script call
  is one; ``total_commands_processed`` and ``commandstats``: every command, also those run
  inside scripts), ZooKeeper ``mntr`` ``zk_packets_received`` (a ``multi`` is one packet;
  session pings included); the harness's own probes are subtracted. SQLite has no wire.

Failure modes are expected and reported, never waited on for ever: every wait has a timeout,
a burst still running after the last period is drained at most until ``misfire_grace`` has
passed, and processes that do not exit within ``STOP_TIMEOUT`` of SIGTERM get SIGKILL. A
case that fails is reported as not measured and the next one runs.

Time: a case takes its start-up (2-10 s), up to a period of alignment, ``bursts + 1``
periods and its shutdown: about 70 s in full mode (5 measured bursts), the 8 cases in about
10 minutes when every leader keeps up. A case whose leader falls behind adds at most
``DRAIN`` + ``STOP_TIMEOUT`` (107 s), so the section is bounded by about 15 minutes with
today's N = 10,000 on three backends. Quick mode: 4 cases, 2 measured bursts, about 3 minutes.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import redis

from benchmarks.contenders import BatonGroup
from benchmarks.procs import CLOCK_TICKS, cpu_seconds, json_lines, start_module, wait_for
from benchmarks.report import NOT_MEASURED, Section, Table, verdict
from benchmarks.stats import ms, percentile
from tests.harness.redis_server import RedisServer
from tests.harness.zookeeper_server import ZooKeeperServer

TITLE = "7. Many jobs on one leader: Baton vs bare APScheduler"
#: Seconds between a job's fires (issue 13: ``every="10s"``).
PERIOD = 10.0
#: The reference's instants lie this long before Baton's, so the bursts do not coincide.
OFFSET = PERIOD / 2
#: A burst's period starts this long before its instant (CPU and backend counters).
MARGIN = 1.0
#: Seconds a period's edge may be read late and still count.
LATE_EDGE = 0.5
#: Seconds between samples of RSS and threads.
SAMPLE_EVERY = 0.5
#: Seconds allowed for the servers, the reference and both replicas to be up with a leader.
START_TIMEOUT = 120.0
#: Baton's default misfire_grace (and the reference's): a fire not started by then never is.
GRACE = 60.0
#: Seconds after the last period that late fires are waited for at most.
DRAIN = GRACE + 2.0
#: Seconds after SIGTERM before SIGKILL (Baton's default shutdown_grace is 30 s).
STOP_TIMEOUT = 45.0
#: Seconds between reads of the fire files while draining.
POLL = 2.0
#: Issue 13 targets.
P99_FACTOR = 2.0
CPU_FACTOR = 3.0
RSS_FACTOR = 2.0
ROUND_TRIPS_PER_FIRE = 0.05
ROUND_TRIPS_FROM = 1_000

BACKEND_NAMES = {"redis": "Redis", "sqlite": "SQLite", "zookeeper": "ZooKeeper"}
BATON = "baton"
BARE = "bare"


@dataclass(frozen=True)
class Case:
    """One measurement: ``jobs`` jobs on ``backend``."""

    backend: str
    jobs: int

    @property
    def label(self) -> str:
        return f"{BACKEND_NAMES[self.backend]}, N = {self.jobs:,}"


FULL = [
    Case("redis", 100),
    Case("redis", 1_000),
    Case("redis", 10_000),
    Case("sqlite", 100),
    Case("sqlite", 1_000),
    Case("sqlite", 10_000),
    Case("zookeeper", 1_000),
    Case("zookeeper", 10_000),
]
QUICK = [Case("redis", 100), Case("redis", 1_000), Case("sqlite", 100), Case("sqlite", 1_000)]
BURSTS_FULL = 5
BURSTS_QUICK = 2


# --- what the server says -------------------------------------------------------------


@dataclass(frozen=True)
class Counters:
    """Cumulative request counters of a backend server at one moment.

    Attributes:
        round_trips: requests read from clients (a pipeline or a script call is one).
        commands: commands executed, also inside scripts; ``None`` when unknown.
        by_command: ``commands`` per command name (the probe's own excluded).
        probes: how many requests the probe itself had sent before this reading.
    """

    round_trips: int
    commands: int | None
    by_command: dict[str, int]
    probes: int


@dataclass(frozen=True)
class Usage:
    """Requests of everyone but the probe between two :class:`Counters`."""

    round_trips: int
    commands: int | None
    by_command: dict[str, int]

    @staticmethod
    def between(first: Counters, last: Counters) -> Usage:
        own = last.probes - first.probes
        commands = None
        if first.commands is not None and last.commands is not None:
            commands = last.commands - first.commands - own
        by_command = {
            name: calls - first.by_command.get(name, 0)
            for name, calls in last.by_command.items()
            if calls > first.by_command.get(name, 0)
        }
        return Usage(last.round_trips - first.round_trips - own, commands, by_command)


class Probe(Protocol):
    """Reads a backend server's counters; each reading is one request of its own."""

    def read(self) -> Counters | None:
        """The counters now, or ``None`` when the server did not answer."""
        ...


class RedisProbe:
    """``INFO all`` (stats and commandstats in one command)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._sent = 0

    def read(self) -> Counters | None:
        sent = self._sent
        self._sent += 1
        try:
            info = self._client.info("all")
        except redis.RedisError:
            return None
        by_command = {
            key.removeprefix("cmdstat_"): int(value["calls"])
            for key, value in info.items()
            if key.startswith("cmdstat_") and key != "cmdstat_info"
        }
        return Counters(
            int(info["total_reads_processed"]),
            int(info["total_commands_processed"]),
            by_command,
            sent,
        )


class ZooKeeperProbe:
    """The ``mntr`` four-letter word; the server counts it as one packet received."""

    def __init__(self, server: ZooKeeperServer) -> None:
        self._server = server
        self._sent = 0

    def read(self) -> Counters | None:
        sent = self._sent
        self._sent += 1
        try:
            text = self._server.four_letter("mntr")
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition("\t")
            if key == "zk_packets_received":
                return Counters(int(value), None, {}, sent)
        return None


@contextmanager
def backend(kind: str, workdir: Path) -> Iterator[tuple[str, Probe | None]]:
    """A fresh backend for one case: its URL and a probe of its server (``None``: SQLite)."""
    if kind == "redis":
        server = RedisServer().start()
        client = server.client()
        try:
            yield server.url, RedisProbe(client)
        finally:
            client.close()
            server.cleanup()
    elif kind == "zookeeper":
        zookeeper = ZooKeeperServer().start()
        try:
            yield zookeeper.url("/bench"), ZooKeeperProbe(zookeeper)
        finally:
            zookeeper.cleanup()
    else:
        yield f"sqlite:///{workdir}/baton.db", None


# --- what the processes say -----------------------------------------------------------


def status(pid: int) -> tuple[int, int]:
    """(VmRSS in bytes, Threads) of ``pid`` from /proc/<pid>/status."""
    rss = threads = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss, threads


class Peaks:
    """Samples RSS and threads of some processes every ``SAMPLE_EVERY`` s on a thread."""

    def __init__(self, pids: dict[str, int]) -> None:
        self._pids = pids
        self.rss: dict[str, int] = {}
        self.threads: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="scale-peaks", daemon=True)

    def _run(self) -> None:
        while True:
            for key, pid in self._pids.items():
                try:
                    rss, threads = status(pid)
                except (OSError, ValueError):
                    continue  # exited
                self.rss[key] = max(self.rss.get(key, 0), rss)
                self.threads[key] = max(self.threads.get(key, 0), threads)
            if self._stop.wait(SAMPLE_EVERY):
                return

    def __enter__(self) -> Peaks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class Snapshot:
    """CPU seconds so far of each process (absent: it had exited) and the server's counters,
    at wall time ``at``."""

    at: float
    cpu: dict[str, float]
    counters: Counters | None


def snapshot(pids: dict[str, int], probe: Probe | None) -> Snapshot:
    at = time.time()
    cpu = {}
    for key, pid in pids.items():
        with suppress(OSError, ValueError):  # exited
            cpu[key] = cpu_seconds(pid)
    return Snapshot(at, cpu, probe.read() if probe is not None else None)


def read_fires(paths: list[Path]) -> list[tuple[str, int, float]]:
    """(job, scheduled instant in ms, start in Unix seconds) of every run in ``paths``."""
    out = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            parts = line.split(",")
            if len(parts) != 3:
                continue  # a line being written
            try:
                out.append((parts[0], round(float(parts[1]) * 1000), float(parts[2])))
            except ValueError:
                continue
    return out


def key(instant: float) -> int:
    return round(instant * 1000)


# --- results --------------------------------------------------------------------------


@dataclass
class Burst:
    """One burst of one scheduler."""

    instant: float
    #: Start minus instant of each distinct (job, instant) that ran, sorted.
    lateness: list[float]
    cpu: float | None = None
    usage: Usage | None = None

    @property
    def duration(self) -> float | None:
        return self.lateness[-1] if self.lateness else None


@dataclass
class Side:
    """One scheduler's results in one case: the warm-up burst, then the measured ones."""

    jobs: int
    warmup: Burst
    bursts: list[Burst]
    duplicates: int
    rss: int | None
    threads: int | None

    @property
    def expected(self) -> int:
        return self.jobs * (len(self.bursts) + 1)

    @property
    def ran(self) -> int:
        return sum(len(b.lateness) for b in [self.warmup, *self.bursts])

    @property
    def lateness(self) -> list[float]:
        return [value for burst in self.bursts for value in burst.lateness]

    def p(self, q: float) -> float | None:
        values = self.lateness
        return percentile(values, q) if values else None

    @property
    def cpu(self) -> float | None:
        values = [b.cpu for b in self.bursts if b.cpu is not None]
        return sum(values) / len(values) if values else None

    def per_fire(self, what: str) -> float | None:
        """Mean ``round_trips`` or ``commands`` per expected fire over the measured bursts."""
        values = []
        for burst in self.bursts:
            if burst.usage is None:
                return None
            value = burst.usage.round_trips if what == "round_trips" else burst.usage.commands
            if value is None:
                return None
            values.append(value / self.jobs)
        return sum(values) / len(values) if values else None

    def by_command(self) -> dict[str, float]:
        total: Counter[str] = Counter()
        for burst in self.bursts:
            if burst.usage is not None:
                total.update(burst.usage.by_command)
        fires = self.jobs * len(self.bursts)
        return {name: calls / fires for name, calls in total.most_common()}


@dataclass
class Outcome:
    """A case's results, or why it was not measured."""

    case: Case
    baton: Side | None = None
    bare: Side | None = None
    error: str | None = None
    #: Seconds from SIGTERM to the leader's exit; ``None``: killed after STOP_TIMEOUT.
    leader_exit: float | None = None
    notes: list[str] = field(default_factory=list)


def side(
    fires: list[tuple[str, int, float]],
    jobs: int,
    instants: list[float],
    snaps: dict[float, Snapshot],
    process: str,
    peaks: Peaks,
) -> Side:
    first: dict[tuple[str, int], float] = {}
    count: Counter[tuple[str, int]] = Counter()
    for job, at, started in fires:
        count[(job, at)] += 1
        first[(job, at)] = min(started, first.get((job, at), started))
    bursts = []
    for instant in instants:
        lateness = sorted(s - instant for (_, i), s in first.items() if i == key(instant))
        burst = Burst(instant, lateness)
        opened, closed = snaps.get(instant - MARGIN), snaps.get(instant + PERIOD - MARGIN)
        # A period whose edges were not read on time (the warm-up's may have been in the
        # past already, a loaded machine may delay them) is left out of CPU and counters.
        if (
            opened is not None
            and closed is not None
            and abs(opened.at - (instant - MARGIN)) < LATE_EDGE
            and abs(closed.at - (instant + PERIOD - MARGIN)) < LATE_EDGE
        ):
            if process in opened.cpu and process in closed.cpu:
                burst.cpu = closed.cpu[process] - opened.cpu[process]
            if process == BATON and opened.counters and closed.counters:
                burst.usage = Usage.between(opened.counters, closed.counters)
        bursts.append(burst)
    return Side(
        jobs=jobs,
        warmup=bursts[0],
        bursts=bursts[1:],
        duplicates=sum(n - 1 for n in count.values()),
        rss=peaks.rss.get(process),
        threads=peaks.threads.get(process),
    )


# --- one case -------------------------------------------------------------------------


def progress(text: str) -> None:
    print(f"[bench] scale: {text}", file=sys.stderr, flush=True)


def sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def leading(group: BatonGroup) -> str | None:
    """The replica that leads, as the backend says.

    Raises:
        RuntimeError: every replica exited.
    """
    found = group.leader()
    if found is not None:
        return found[0]
    if not any(replica.alive for replica in group.cluster.replicas.values()):
        log = next(iter(group.cluster.replicas.values())).log_path
        raise RuntimeError(f"every replica exited during start-up: {log.read_text()[-500:]}")
    return None


def replica_started(group: BatonGroup, name: str) -> bool:
    """Whether replica ``name`` logged that it started.

    Raises:
        RuntimeError: it exited instead.
    """
    if group.events(name, "replica_started"):
        return True
    if not group.cluster.replicas[name].alive:
        raise RuntimeError(f"replica {name} exited during start-up")
    return False


def bare_first_instant(log: Path, proc: subprocess.Popen[bytes]) -> float | None:
    """The reference's first instant once it has scheduled every job.

    Raises:
        RuntimeError: it exited instead.
    """
    for event in json_lines(log):
        if event.get("event") == "started":
            return float(event["first"])
    if proc.poll() is not None:
        raise RuntimeError(f"the reference exited during start-up: {log.read_text()[-500:]}")
    return None


def shut_down(procs: list[subprocess.Popen[bytes]]) -> float | None:
    """SIGTERM every process at once; SIGKILL those still running after ``STOP_TIMEOUT``.

    Returns:
        Seconds until the first process (the leader) exited, ``None`` if it was killed.
    """
    sent = time.monotonic()
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGTERM)
    exited: float | None = None
    for index, proc in enumerate(procs):
        try:
            proc.wait(timeout=max(0.1, sent + STOP_TIMEOUT - time.monotonic()))
            if index == 0:
                exited = time.monotonic() - sent
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
    return exited


def replicas(
    case: Case, url: str, cluster: str, workdir: Path, fires_dir: Path, catch_up: str = "none"
) -> BatonGroup:
    """Two Baton replicas (not started) running ``case.jobs`` jobs every :data:`PERIOD`
    (with ``catch_up``), each appending its runs to a file in ``fires_dir``."""
    return BatonGroup(
        f"Baton ({case.label})",
        url,
        cluster,
        workdir / "baton",
        ["r1", "r2"],
        {},
        env={
            "BATON_JOBS": "benchmarks.scale_jobs",
            "BATON_SCALE_JOBS": str(case.jobs),
            "BATON_SCALE_EVERY": f"{PERIOD:g}s",
            "BATON_SCALE_CATCH_UP": catch_up,
            "BATON_SCALE_OUT": str(fires_dir),
        },
    )


def run_case(case: Case, bursts: int, workdir: Path) -> Outcome:
    """Measure ``bursts`` bursts (after one warm-up) of ``case``."""
    outcome = Outcome(case)
    workdir.mkdir(parents=True, exist_ok=True)
    fires_dir = workdir / "fires"
    fires_dir.mkdir()
    bare_out, bare_log = workdir / "bare.csv", workdir / "bare.log"
    with backend(case.backend, workdir) as (url, probe):
        grid = ["--every", str(PERIOD), "--offset", str(OFFSET)]
        bare = start_module(
            "benchmarks.bare_scale",
            ["--jobs", str(case.jobs), *grid, "--out", str(bare_out)],
            bare_log,
        )
        group = replicas(case, url, f"bench-scale-{case.jobs}", workdir, fires_dir)
        procs = [bare]
        try:
            group.start()
            leader = wait_for(partial(leading, group), START_TIMEOUT, f"{case.label}: a leader")
            for name in group.names:
                wait_for(partial(replica_started, group, name), START_TIMEOUT, f"{name} up")
            first = wait_for(
                lambda: bare_first_instant(bare_log, bare), START_TIMEOUT, "the reference"
            )
            follower = next(name for name in group.names if name != leader)
            procs = [group.cluster.replicas[n].proc for n in (leader, follower)] + [bare]
            pids = {BATON: group.pid(leader), BARE: bare.pid}
            # The reference's warm-up burst (OFFSET before Baton's) must be one of its own.
            earliest = max(time.time() + MARGIN + 0.5, first + OFFSET)
            start = math.ceil(earliest / PERIOD) * PERIOD
            instants = [start + k * PERIOD for k in range(bursts + 1)]
            bare_instants = [t - OFFSET for t in instants]
            edges = sorted(
                {t - MARGIN for t in instants + bare_instants}
                | {t + PERIOD - MARGIN for t in instants + bare_instants}
            )
            snaps: dict[float, Snapshot] = {}
            with Peaks(pids) as peaks:
                for edge in edges:
                    sleep_until(edge)
                    snaps[edge] = snapshot(pids, probe)
                    if edge + MARGIN in instants:
                        burst = instants.index(edge + MARGIN)
                        progress(f"{case.label}: burst {burst}/{bursts} at {edge + MARGIN:.0f}")

                def complete() -> bool:
                    done = {(j, i) for j, i, _ in read_fires(sorted(fires_dir.glob("*.csv")))}
                    done_bare = {(j, i) for j, i, _ in read_fires([bare_out])}
                    want = {key(t) for t in instants}
                    want_bare = {key(t) for t in bare_instants}
                    return sum(i in want for _, i in done) >= case.jobs * len(instants) and sum(
                        i in want_bare for _, i in done_bare
                    ) >= case.jobs * len(bare_instants)

                deadline = instants[-1] + DRAIN
                while not complete() and time.time() < deadline:
                    progress(f"{case.label}: waiting for late fires (until {deadline:.0f})")
                    time.sleep(POLL)
            now = group.leader()
            if now is None or now[0] != leader:
                outcome.notes.append(
                    f"{case.label}: leadership changed during the run ({leader} led at the "
                    f"start, {now[0] if now else 'nobody'} at the end); CPU, RSS and threads "
                    f"are {leader}'s"
                )
        finally:
            progress(f"{case.label}: stopping")
            if len(procs) == 1:  # failed before the leader was known: stop them all anyway
                procs = [r.proc for r in group.cluster.replicas.values()] + [bare]
            outcome.leader_exit = shut_down(procs)
            group.close()
    baton_files = sorted(fires_dir.glob("*.csv"))
    outcome.baton = side(read_fires(baton_files), case.jobs, instants, snaps, BATON, peaks)
    outcome.bare = side(read_fires([bare_out]), case.jobs, bare_instants, snaps, BARE, peaks)
    return outcome


# --- the report -----------------------------------------------------------------------


def secs(value: float | None) -> str:
    """A duration for a table cell: milliseconds below a second, else seconds."""
    if value is None:
        return "—"
    return ms(value, 1) if abs(value) < 1 else f"{value:.2f} s"


def mib(value: int | None) -> str:
    return "—" if value is None else f"{value / 2**20:.0f} MiB"


def number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


@dataclass(frozen=True)
class Check:
    """One issue-13 target of one case.

    Attributes:
        name: short name, for the list of misses.
        measured: Baton's value; ``limit``: what it had to stay within (empty: no target).
        met: ``None`` when the target does not apply or could not be measured.
    """

    name: str
    measured: str
    limit: str = ""
    met: bool | None = None

    def cell(self) -> str:
        if self.met is None:
            return self.measured if not self.limit else f"{self.measured} (limit {self.limit})"
        if not self.limit:
            return f"{verdict(self.met)}: {self.measured}"
        sign = "≤" if self.met else ">"
        return f"{verdict(self.met)}: {self.measured} {sign} {self.limit}"


def checks(outcome: Outcome) -> list[Check]:
    """The five targets of a measured case, in the order of the targets table."""
    baton, bare = outcome.baton, outcome.bare
    assert baton is not None and bare is not None
    ran = f"{baton.ran:,}/{baton.expected:,}, {baton.duplicates} duplicates"
    out = [Check("fires", ran, met=baton.ran == baton.expected and baton.duplicates == 0)]
    p99, ref = baton.p(99), bare.p(99)
    if ref is None:
        out.append(Check("p99", secs(p99)))
    else:
        limit = P99_FACTOR * ref
        out.append(Check("p99", secs(p99), secs(limit), p99 is not None and p99 <= limit))
    cpu, ref_cpu = baton.cpu, bare.cpu
    if cpu is None or ref_cpu is None:
        out.append(Check("CPU", "—"))
    else:
        limit = CPU_FACTOR * ref_cpu
        out.append(Check("CPU", f"{cpu:.3f} s", f"{limit:.3f} s", cpu <= limit))
    if baton.rss is None or bare.rss is None:
        out.append(Check("RSS", "—"))
    else:
        rss_limit = round(RSS_FACTOR * bare.rss)
        out.append(Check("RSS", mib(baton.rss), mib(rss_limit), baton.rss <= rss_limit))
    trips = baton.per_fire("round_trips")
    if trips is None or outcome.case.jobs < ROUND_TRIPS_FROM:
        out.append(Check("round trips", number(trips)))
    else:
        limit_text = f"{ROUND_TRIPS_PER_FIRE:.3f}"
        out.append(Check("round trips", f"{trips:.3f}", limit_text, trips <= ROUND_TRIPS_PER_FIRE))
    return out


def overall(found: list[Check]) -> str:
    missed = [check.name for check in found if check.met is False]
    return verdict(True) if not missed else f"{verdict(False)}: {', '.join(missed)}"


def build(section: Section, outcomes: list[Outcome], bursts: int) -> None:
    latency = Table(
        [
            "Case",
            "Scheduler",
            "p50",
            "p99",
            "max",
            "burst duration p50 / max",
            "fires run / expected",
            "duplicates",
            "SIGTERM → leader exit",
        ]
    )
    resources = Table(
        [
            "Case",
            "Scheduler",
            "CPU-s per burst (mean)",
            "RSS max",
            "threads max",
            "round trips per fire",
            "commands per fire",
        ]
    )
    targets = Table(
        ["Case", "every fire runs", "p99 ≤ 2x bare", "CPU ≤ 3x", "RSS ≤ 2x", "round trips ≤ 0.05",
         "Target", "Result"]
    )  # fmt: skip
    per_burst = Table(
        ["Case", "burst", "Baton p50", "p99", "max", "fires run", "CPU-s", "round trips / fire",
         "bare p99", "bare max", "bare CPU-s"]
    )  # fmt: skip
    commands = Table(["Case", "commands per fire, by command (inside scripts too)"])
    for outcome in outcomes:
        label = outcome.case.label
        baton, bare = outcome.baton, outcome.bare
        if outcome.error is not None or baton is None or bare is None:
            reason = f"{NOT_MEASURED}: {outcome.error}"
            latency.add(label, "—", reason, "—", "—", "—", "—", "—", "—")
            targets.add(label, "—", "—", "—", "—", "—", "issue 13", NOT_MEASURED)
            section.summarize(f"Scale: {label}", "—", "—", "issue 13", reason)
            continue
        exit_text = (
            "killed after " + secs(STOP_TIMEOUT)
            if outcome.leader_exit is None
            else secs(outcome.leader_exit)
        )
        for name, found in (("Baton leader (2 replicas)", baton), ("bare APScheduler 3", bare)):
            durations = [b.duration for b in found.bursts if b.duration is not None]
            latency.add(
                label,
                name,
                secs(found.p(50)),
                secs(found.p(99)),
                secs(max(found.lateness) if found.lateness else None),
                f"{secs(percentile(durations, 50) if durations else None)} / "
                f"{secs(max(durations) if durations else None)}",
                f"{found.ran:,} / {found.expected:,}",
                found.duplicates,
                exit_text if found is baton else "—",
            )
            is_baton = found is baton
            resources.add(
                label,
                name,
                number(found.cpu),
                mib(found.rss),
                found.threads if found.threads is not None else "—",
                number(found.per_fire("round_trips")) if is_baton else "—",
                number(found.per_fire("commands"), 2) if is_baton else "—",
            )
        found_checks = checks(outcome)
        result = overall(found_checks)
        targets.add(label, *(c.cell() for c in found_checks), "all five (issue 13)", result)
        for index, (mine, theirs) in enumerate(
            zip([baton.warmup, *baton.bursts], [bare.warmup, *bare.bursts], strict=True)
        ):
            late, ref_late = mine.lateness, theirs.lateness
            trips = None if mine.usage is None else mine.usage.round_trips / outcome.case.jobs
            per_burst.add(
                label,
                "warm-up" if index == 0 else index,
                secs(percentile(late, 50) if late else None),
                secs(percentile(late, 99) if late else None),
                secs(mine.duration),
                f"{len(late):,} / {outcome.case.jobs:,}",
                number(mine.cpu),
                number(trips),
                secs(percentile(ref_late, 99) if ref_late else None),
                secs(theirs.duration),
                number(theirs.cpu),
            )
        by_command = baton.by_command()
        if by_command:
            commands.add(
                label,
                ", ".join(f"{name} {calls:.2f}" for name, calls in list(by_command.items())[:8]),
            )
        trips_text = number(baton.per_fire("round_trips"))
        section.summarize(
            f"Scale: {label} jobs every 10 s (issue 13)",
            f"p99 {secs(baton.p(99))}, {baton.ran:,}/{baton.expected:,} fires, "
            f"{number(baton.cpu)} CPU-s/burst, {mib(baton.rss)}, {baton.threads} threads"
            + (f", {trips_text} round trips/fire" if trips_text != "—" else ""),
            f"p99 {secs(bare.p(99))}, {bare.ran:,}/{bare.expected:,} fires, "
            f"{number(bare.cpu)} CPU-s/burst, {mib(bare.rss)}, {bare.threads} threads",
            "all fires; p99 ≤ 2x; CPU ≤ 3x; RSS ≤ 2x; ≤ 0.05 round trips/fire at N ≥ 1,000",
            result,
        )
        section.notes += outcome.notes
    section.tables = [targets, latency, resources, per_burst]
    if commands.rows:
        section.tables.append(commands)
    section.method = [
        f"per case a fresh server on 127.0.0.1 (SQLite: a fresh file); two Baton replicas "
        f"(leader + follower, default timings and settings) load N jobs every={PERIOD:g}s, "
        "catch_up='none', misfire_grace 60 s (benchmarks/scale_jobs.py): all N fall due at "
        "the same instant; measured on the leader;",
        f"reference: bare APScheduler 3 BackgroundScheduler in its own process, N interval "
        f"jobs of {PERIOD:g} s (default ThreadPoolExecutor(10), misfire_grace_time 60 s, "
        f"coalesce), instants {OFFSET:g} s before Baton's so the bursts do not coincide "
        "(benchmarks/bare_scale.py); both run side by side on the same cores;",
        f"each run appends `job,instant,time.time()` (taken first thing) to its process's "
        f"file under a lock; lateness = start - instant; burst duration = last start - "
        f"instant; {bursts} measured bursts per case after one warm-up burst; percentiles "
        "pooled over the measured bursts' fires; fires run = distinct (job, instant) over "
        "all bursts including the warm-up, duplicates = runs beyond the first of a pair;",
        f"CPU = utime+stime from /proc/<pid>/stat over each burst's period ({MARGIN:g} s "
        f"before its instant to {MARGIN:g} s before the next; includes idle work such as "
        f"lease renewals; the kernel counts in clock ticks of {1 / CLOCK_TICKS * 1000:g} ms, so "
        "a mean over few bursts of a process that is nearly idle reads 0); RSS and threads = "
        "maxima of /proc/<pid>/status every "
        f"{SAMPLE_EVERY:g} s over the whole run;",
        "round trips: Redis INFO total_reads_processed delta over Baton's periods (read "
        "events on client sockets: a pipeline or EVALSHA is one; both replicas' traffic); "
        "commands: total_commands_processed and commandstats deltas, which count commands "
        "run inside scripts too; ZooKeeper: mntr zk_packets_received (a multi is one "
        "packet; includes session pings); the harness's own INFO/mntr requests subtracted; "
        "SQLite is embedded (no round trips to count);",
        f"SIGTERM goes to both replicas and the reference at once at the end; a process "
        f"still running after {STOP_TIMEOUT:g} s gets SIGKILL; fires still due after the "
        f"last period are waited for at most {DRAIN:g} s after the last instant.",
    ]


def run(quick: bool, base: Path) -> Section:
    section = Section("scale", TITLE)
    cases, bursts = (QUICK, BURSTS_QUICK) if quick else (FULL, BURSTS_FULL)
    outcomes = []
    for case in cases:
        progress(f"{case.label}: starting")
        try:
            outcome = run_case(case, bursts, base / f"{case.backend}-{case.jobs}")
        except Exception as exc:
            progress(f"{case.label}: not measured: {type(exc).__name__}: {exc}")
            outcome = Outcome(case, error=f"{type(exc).__name__}: {exc}")
        outcomes.append(outcome)
    if all(outcome.error is not None for outcome in outcomes):
        raise RuntimeError(f"no case measured: {outcomes[0].error}")
    build(section, outcomes, bursts)
    return section
