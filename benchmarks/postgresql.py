"""PostgreSQL rows (issue 14): Baton's PostgreSQL backend vs OpenStack tooz's PostgreSQL driver.

One throw-away PostgreSQL cluster (the test harness's, ``fsync`` off) serves every
measurement: graceful handover and kill -9 failover (two processes per contender,
repetitions alternating), claim latency (single and 1,000 at once), lease acquire+release
cycles per second, and fire lateness. tooz's lock is a session-level advisory lock
(``pg_advisory_lock``) on a connection of its own; Baton's lease is a row compared against
the server's clock, with a fencing token (``scheduler/backends/postgresql/lease.py``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import psycopg
import psycopg2

from benchmarks import cycles, failover, lateness
from benchmarks.contenders import BatonGroup, ExpiryProbe, Group, RefGroup, ThreadProbe
from benchmarks.failover import Rep
from benchmarks.procs import wait_for
from benchmarks.report import NO_TARGET, Section, Table, verdict
from benchmarks.stats import latency_cells, ms, percentile
from benchmarks.zookeeper import claim_latencies
from scheduler.backends import from_url
from scheduler.backends.base import LeaseBackend
from scheduler.backends.runs import Retention, RunRecord
from scheduler.errors import ClaimLost
from scheduler.leadership.lease import Holder

TITLE = "8. PostgreSQL backend vs tooz"
#: Baton's lease TTL, seconds (as in section 1); tooz's advisory lock has no TTL.
TTL = 2.0
#: Issue 14 targets.
HANDOVER_P50_TARGET = 0.020
HANDOVER_SPEEDUP_TARGET = 5.0
AFTER_EXPIRY_TARGET = 0.100
CLAIM_P99_TARGET = 0.005
#: Runs per claim_many batch: one job of each of 1,000 due at one instant.
BATCH = 1000
#: Seconds between two polls of ``pg_locks`` while a killed tooz holder's lock is watched.
LOCK_POLL = 0.0005
#: A frozen (SIGSTOP) leader: seconds to wait for a new leader before giving up.
FREEZE_CAP = 3 * TTL
#: The channel Baton's followers listen on (``scheduler/backends/postgresql/schema.py``).
LISTEN_QUERY = "LISTEN baton_lease_released"

BATON_PG = "Baton, PostgreSQL backend"
TOOZ = "tooz PostgreSQL driver lock (reference)"
BARE = "bare APScheduler 3 BackgroundScheduler (reference)"

#: The lateness table's name for the Baton leader.
LATENESS_LABEL = "Baton leader (PostgreSQL backend, 2 replicas)"


def tooz_key(name: str) -> tuple[int, int]:
    """The two int4 keys tooz passes to ``pg_advisory_lock`` for lock ``name`` (the first
    two bytes of its MD5: 65,536 possible locks per database)."""
    digest = hashlib.md5(name.encode(), usedforsecurity=False).digest()
    return digest[0], digest[1]


class Listeners:
    """Readiness of Baton followers on PostgreSQL: each has a connection that ran ``LISTEN``.

    A follower opens its listening connection at its first wait and keeps it (also once it
    leads). The server's count of sessions whose last statement was the ``LISTEN`` must be
    every live follower plus the live processes known to have listened before.
    """

    def __init__(self, observer: psycopg.Connection[Any]) -> None:
        self.observer = observer
        self.listening: set[str] = set()

    def __call__(self, group: BatonGroup, followers: list[str]) -> bool:
        live = {name for name in group.names if group.cluster.replicas[name].alive}
        expected = set(followers) | (self.listening & live)
        row = self.observer.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s", (LISTEN_QUERY,)
        ).fetchone()
        if row is not None and int(row[0]) == len(expected):
            self.listening = expected
            return True
        return False


class LockGoneProbe(ThreadProbe):
    """kill -9 of a tooz holder: when the server let go of its advisory lock.

    A thread polls ``pg_locks`` every :data:`LOCK_POLL` s from its own connection, from
    just before the kill, until the killed backend holds the lock no more; the release is
    taken as the midpoint between the last poll that saw it held (sent) and the first that
    did not (answered), so it is known to within one poll round trip.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], pid: int) -> None:
        self._conn = connect()
        self._pid = pid
        super().__init__("lock-gone-probe")

    def _run(self) -> None:
        query = (
            "SELECT EXISTS (SELECT 1 FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND pid = %s)"
        )
        deadline = time.monotonic() + 30.0
        try:
            last_held = time.time()
            while time.monotonic() < deadline:
                sent = time.time()
                row = self._conn.execute(query, (self._pid,)).fetchone()
                if row is not None and not row[0]:
                    self._expiry = (last_held + time.time()) / 2
                    return
                last_held = sent
                time.sleep(LOCK_POLL)
        finally:
            self._conn.close()


class ToozLockGroup(RefGroup):
    """Contenders holding tooz's PostgreSQL lock (``tooz_lock_ref``); the server's
    ``pg_locks`` says who holds it and who waits."""

    ident_field = "pid"

    def __init__(
        self,
        label: str,
        url: str,
        lock: str,
        observer: psycopg.Connection[Any],
        connect: Callable[[], psycopg.Connection[Any]],
        workdir: Path,
        names: list[str],
    ) -> None:
        super().__init__(label, "benchmarks.tooz_lock_ref", workdir, names)
        self.url = url
        self.lock = lock
        self.key = tooz_key(lock)
        self.observer = observer
        self.connect = connect

    def args(self, name: str) -> list[str]:
        return ["--url", self.url, "--name", self.lock, "--member", name]

    def _locks(self) -> list[tuple[int, bool]]:
        """(backend pid, granted) of every session holding or waiting for the lock."""
        rows = self.observer.execute(
            "SELECT pid, granted FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid = %s AND objid = %s AND objsubid = 2",
            self.key,
        ).fetchall()
        return [(int(pid), bool(granted)) for pid, granted in rows]

    def leader(self) -> tuple[str, str] | None:
        holders = [pid for pid, granted in self._locks() if granted]
        return self.holder(holders[0]) if holders else None  # granted, maybe not logged yet

    def ready(self, leader: str) -> bool:
        if not self.started(leader):
            return False
        followers = [name for name in self.names if name != leader]
        waiting = [pid for pid, granted in self._locks() if not granted]
        return len(waiting) == len(followers)

    def expiry_probe(self, name: str) -> ExpiryProbe:
        holders = [pid for pid, granted in self._locks() if granted]
        if not holders:
            raise RuntimeError(f"{self.label}: no holder of the lock for leader {name}")
        return LockGoneProbe(self.connect, holders[0])


def one_freeze(group: Group, timeout: float) -> float | None:
    """SIGSTOP the leader of ``group``: seconds until another process leads, or ``None`` if
    none does within :data:`FREEZE_CAP`. The frozen process is then killed and restarted."""
    name, ident = wait_for(group.leader, timeout, f"{group.label}: a leader")
    wait_for(lambda: group.ready(name), timeout, f"{group.label}: followers ready")
    time.sleep(failover.SETTLE)
    pid = group.pid(name)

    def new_leader() -> tuple[str, str] | None:
        now = group.leader()
        return now if now is not None and now[1] != ident else None

    sent = time.time()
    os.kill(pid, signal.SIGSTOP)
    took: float | None = None
    try:
        new_name, new_ident = wait_for(new_leader, FREEZE_CAP, f"{group.label}: a new leader")
        started = wait_for(
            lambda: group.acquired_at(new_name, new_ident),
            timeout,
            f"{group.label}: {new_name} logging its leadership",
        )
        took = started - sent
    except TimeoutError:
        pass
    finally:
        os.kill(pid, signal.SIGKILL)
        group.reap(name, timeout)
    new_name, _ = wait_for(new_leader, timeout, f"{group.label}: a leader after the kill")
    group.restart(name)
    wait_for(lambda: group.ready(new_name), timeout, f"{group.label}: {name} back as follower")
    return took


def claim_batches(backend: LeaseBackend, name: str, batches: int) -> list[float]:
    """Seconds per ``claim_many`` of :data:`BATCH` runs (one fire each of as many jobs, due
    at one instant; instants 10 s apart), while holding the lease.

    Each batch is then started (``start_many``) and finished (``finish_many``) untimed, as
    the runner does.
    """
    holder = Holder.new("bench")
    lease = wait_for(lambda: backend.try_acquire(name, holder, 10.0), 15, f"lease {name}")
    retention = Retention(limit=100, protect=120.0)
    first = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10 * batches + 60)
    jobs = [f"bench.job{j:04d}" for j in range(BATCH)]
    out = []
    try:
        for i in range(batches):
            lease = backend.renew(lease)
            at = first + timedelta(seconds=10 * i)
            now = datetime.now(UTC)
            runs = [
                RunRecord(
                    job=job, scheduled_time=at, replica_id="bench", token=lease.token, started=now
                )
                for job in jobs
            ]
            started = time.perf_counter()
            claimed = backend.claim_many(lease, runs, retention)
            out.append(time.perf_counter() - started)
            won = [run for run in claimed if run is not None]
            if len(won) != BATCH:
                raise RuntimeError(f"{backend.url}: {BATCH - len(won)} fires claimed already")
            now = datetime.now(UTC)
            ran = backend.start_many(lease, [run.started_now(now) for run in won])
            refused = [answer for answer in ran if isinstance(answer, ClaimLost)]
            if refused:
                raise RuntimeError(f"{backend.url}: {len(refused)} starts refused: {refused[0]}")
            now = datetime.now(UTC)
            backend.finish_many(
                name, [run.finished("ok", now) for run in ran if isinstance(run, RunRecord)]
            )
    finally:
        backend.release(lease)
    return out


def advisory_cycle(conn: Any, key: tuple[int, int]) -> Callable[[], None]:
    """The bare advisory lock on one kept psycopg2 connection: try-lock + unlock."""
    cur = conn.cursor()

    def cycle() -> None:
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", key)
        row = cur.fetchone()
        if not row or row[0] is not True:
            raise RuntimeError(f"advisory lock {key} unexpectedly held")
        cur.execute("SELECT pg_advisory_unlock(%s, %s)", key)
        cur.fetchone()

    return cycle


def handover_table(term: dict[str, list[Rep]], tooz_p50: float) -> Table:
    def judge(p50: float) -> tuple[str, str]:
        target = (
            f"p50 < {ms(HANDOVER_P50_TARGET, 0)} and ≤ tooz p50 / "
            f"{HANDOVER_SPEEDUP_TARGET:g} ({ms(tooz_p50 / HANDOVER_SPEEDUP_TARGET)})"
        )
        return target, verdict(
            p50 < HANDOVER_P50_TARGET and p50 * HANDOVER_SPEEDUP_TARGET <= tooz_p50
        )

    return failover.handover_table([(BATON_PG, term[BATON_PG], judge), (TOOZ, term[TOOZ], None)])


def kill_table(kill: dict[str, list[Rep]]) -> Table:
    rows = [(BATON_PG, kill[BATON_PG], "target"), (TOOZ, kill[TOOZ], "reference")]
    return failover.kill_table(rows, "server lets go", "after that", AFTER_EXPIRY_TARGET)


def missing() -> str | None:
    """Why the PostgreSQL rows cannot be measured, or ``None`` when they can."""
    try:
        import tooz  # noqa: F401
    except ImportError as exc:
        return f"tooz is not installed ({exc}); pip install -e '.[dev]'"
    try:
        from tests.harness.postgresql_server import postgres_bindir

        postgres_bindir()
    except Exception as exc:
        return f"no PostgreSQL server: {exc}"
    return None


def run(quick: bool, base: Path) -> Section:
    section = Section("postgresql", TITLE)
    reason = missing()
    if reason is not None:
        return section.not_measured("PostgreSQL rows", "issue 14 targets", reason)
    from tests.harness.postgresql_server import PostgresServer
    from tests.harness.redis_server import RedisServer

    reps = 3 if quick else 10
    claims = 50 if quick else 1000
    batches = 3 if quick else 20
    n, seconds = (2, 0.5) if quick else (10, 1.0)
    fires = 8 if quick else 120
    freezes = 1 if quick else 3
    server = PostgresServer().start()
    groups: list[Group] = []
    try:
        url = server.url()
        observer = server.connect()
        baton = BatonGroup(
            BATON_PG,
            url,
            "bench-pg",
            base / "baton",
            ["p1", "p2"],
            {"lease_ttl": TTL},
            waiting=Listeners(observer),
        )
        tooz_group = ToozLockGroup(
            TOOZ, url, "bench-tooz", observer, server.connect, base / "tooz", ["t1", "t2"]
        )
        groups = [baton, tooz_group]
        try:
            for group in groups:
                group.start()
            results = failover.measure(
                groups, {signal.SIGTERM: reps, signal.SIGKILL: reps}, TTL + 15.0
            )
            frozen: dict[str, list[float | None]] = {group.label: [] for group in groups}
            for _ in range(freezes):
                for group in groups:
                    frozen[group.label].append(one_freeze(group, TTL + 15.0))
        finally:
            for group in groups:
                group.close()

        backend = from_url(url, op_timeout=2.0)
        try:
            pg_claims = claim_latencies(backend, "bench-claims", claims)
            pg_batches = claim_batches(backend, "bench-batches", batches)
            tooz_run, tooz_stop = cycles.tooz_cycle(url, "bench-cycles-tooz")
            raw = psycopg2.connect(url)
            raw.autocommit = True
            try:
                rates = cycles.rounds(
                    {
                        "baton": cycles.baton_cycle(backend, "bench-cycles"),
                        "tooz": tooz_run,
                        "advisory": advisory_cycle(raw, tooz_key("bench-cycles-raw")),
                    },
                    n,
                    seconds,
                )
            finally:
                tooz_stop()
                raw.close()
        finally:
            backend.close()

        redis = RedisServer().start()
        try:
            redis_backend = from_url(redis.url, op_timeout=2.0)
            try:
                redis_claims = claim_latencies(redis_backend, "bench-claims", claims)
                redis_batches = claim_batches(redis_backend, "bench-batches", batches)
            finally:
                redis_backend.close()
        finally:
            redis.cleanup()

        baton_fires, bare_fires = lateness.measure_backend(
            LATENESS_LABEL, url, "bench-pg-lateness", base, fires
        )
        observer.close()
    finally:
        server.cleanup()

    term = {label: results[label][signal.SIGTERM] for label in (BATON_PG, TOOZ)}
    kill = {label: results[label][signal.SIGKILL] for label in (BATON_PG, TOOZ)}
    baton_term = percentile([r.failover for r in term[BATON_PG]], 50)
    tooz_term = percentile([r.failover for r in term[TOOZ]], 50)
    baton_kill = percentile([r.failover for r in kill[BATON_PG]], 50)
    tooz_kill = percentile([r.failover for r in kill[TOOZ]], 50)
    after = [r.after_expiry for r in kill[BATON_PG] if r.after_expiry is not None]
    tooz_after = [r.after_expiry for r in kill[TOOZ] if r.after_expiry is not None]

    freeze_table = Table(["Contender", "SIGSTOP → new leader, each repetition", "n"])
    for label in (BATON_PG, TOOZ):
        cells = [ms(t) if t is not None else f"none within {FREEZE_CAP:g} s" for t in frozen[label]]
        freeze_table.add(label, ", ".join(cells), len(cells))

    claim_table = Table(["Call", "p50", "p99", "max", "n", "Target", "Result"])
    pg_p99 = percentile(pg_claims, 99)
    claim_table.add(
        "Baton PostgresBackend.claim (one fire)",
        *latency_cells(pg_claims),
        f"p99 < {ms(CLAIM_P99_TARGET, 0)}",
        verdict(pg_p99 < CLAIM_P99_TARGET),
    )
    claim_table.add(
        f"Baton PostgresBackend.claim_many ({BATCH:,} fires, per batch)",
        *latency_cells(pg_batches, 1),
        NO_TARGET,
        NO_TARGET,
    )
    claim_table.add(
        "Baton RedisBackend.claim (for comparison)",
        *latency_cells(redis_claims),
        NO_TARGET,
        NO_TARGET,
    )
    claim_table.add(
        f"Baton RedisBackend.claim_many ({BATCH:,} fires, per batch, for comparison)",
        *latency_cells(redis_batches, 1),
        NO_TARGET,
        NO_TARGET,
    )

    baton_rate = percentile(rates["baton"], 50)
    tooz_rate = percentile(rates["tooz"], 50)
    rate_table = cycles.tooz_table(
        "Baton PostgresBackend try_acquire + release (fencing token, NOTIFY)",
        rates,
    )
    rate_table.add(
        "bare pg_try_advisory_lock + pg_advisory_unlock, one kept connection (for information)",
        *cycles.cell(rates["advisory"]),
        NO_TARGET,
        NO_TARGET,
    )

    fire_table = lateness.table(
        [(LATENESS_LABEL, baton_fires), (BARE, bare_fires)],
        bare_fires,
        {LATENESS_LABEL},
    )
    section.tables = [
        handover_table(term, tooz_term),
        kill_table(kill),
        freeze_table,
        claim_table,
        rate_table,
        fire_table,
    ]
    section.method = [
        f"failover: two processes per contender on one PostgreSQL server; Baton replicas "
        f"with lease_ttl {TTL:g} s (renew every ttl/3), followers waiting on LISTEN (ready "
        "once pg_stat_activity shows every follower's LISTEN session); tooz contenders run "
        "coordinator.get_lock(name).acquire(blocking=True), i.e. SELECT pg_advisory_lock() "
        "waiting in the server's lock queue (ready once pg_locks shows the follower's "
        "ungranted request), and on SIGTERM release() (pg_advisory_unlock, then the lock's "
        "connection is closed); failover = the new leader's own timestamp of taking the "
        "lead minus the moment the signal was sent; "
        f"{reps} graceful and {reps} kill -9 repetitions per contender, alternating;",
        f"frozen leader: SIGSTOP to the leader, then wait up to {FREEZE_CAP:g} s for "
        f"another process to lead (then SIGKILL the frozen one and restart it); {freezes} "
        "repetitions per contender, after the kill -9 ones, for information (no target);",
        "kill -9, server lets go: Baton, the lease's remaining TTL on the database clock "
        "(read once the killed process is reaped) added to the moment of that read; tooz, "
        f"when pg_locks stops showing the killed backend holding the lock (polled every "
        f"{LOCK_POLL * 1000:g} ms from just before the kill, midpoint of the last poll "
        "that saw it and the first that did not);",
        f"claim: {claims} PostgresBackend.claim calls in a loop from one client holding the "
        "lease (one server-side function: lease check on the database clock + insert + trim "
        "to the newest 100 finished runs), fires 10 s apart, each then started and finished "
        f"untimed as the runner does; claim_many: {batches} batches of one fire each of "
        f"{BATCH:,} jobs due at one instant, each batch then started and finished untimed; "
        "the same on a local Redis for comparison;",
        f"cycles: one client in the benchmark process, {n} rounds of {seconds:g} s per "
        f"contender, alternating, after {cycles.WARMUP_CYCLES} warm-up cycles; tooz's "
        "acquire opens a new connection (SCRAM authentication) and its release closes it, "
        "so each tooz cycle is a connect + lock + unlock + close;",
        f"fire lateness: as in section 2 ({lateness.EVERY:g} s job, {len(baton_fires)} "
        "fires) with 2 Baton replicas on PostgreSQL (default timings) next to bare "
        "APScheduler.",
    ]
    section.notes = [
        "tooz's follower blocks inside pg_advisory_lock, so the server itself hands the lock "
        "over the moment the holder's session unlocks or ends: no client round trip after "
        "the release. Baton's follower learns of a release by NOTIFY and then takes the "
        "lease with one statement, so a ≥ 5x lead over tooz's graceful handover is not "
        "reachable by any client-side scheme; the target is reported as measured.",
        "tooz's kill -9 failover is fast because kill -9 closes the holder's socket and the "
        "server ends the session at once. A holder that stops without closing its socket "
        "keeps the lock: a stopped process (SIGSTOP, the frozen-leader table) or a paused VM "
        "whose kernel still answers keepalives for as long as it is stopped; a partitioned "
        "or powered-off host until the server's TCP keepalive gives up (tcp_keepalives_idle "
        "0 = the OS default, 2 h on Linux); and a holder that resumes never learns it lost "
        "anything. Baton's lease expires at its TTL on the database clock whatever the "
        "connection does, and its token fences a resumed ex-leader: that is what Baton's "
        "slower kill -9 row buys.",
        "tooz's lock has no fencing token; its key is the first two bytes of the name's MD5, "
        "so two lock names in one database collide with probability 1/65,536; tooz "
        f"{version('tooz')} (the version measured) warns that its PostgreSQL driver is "
        "deprecated.",
    ]
    section.summarize(
        "PostgreSQL graceful handover p50",
        ms(baton_term),
        ms(tooz_term),
        f"< {ms(HANDOVER_P50_TARGET, 0)}",
        verdict(baton_term < HANDOVER_P50_TARGET),
    )
    section.summarize(
        "PostgreSQL graceful handover p50, speed-up over tooz",
        f"{tooz_term / baton_term:.2f}x",
        "1x",
        f"≥ {HANDOVER_SPEEDUP_TARGET:g}x",
        verdict(baton_term * HANDOVER_SPEEDUP_TARGET <= tooz_term),
    )
    section.summarize(
        "PostgreSQL kill -9: new leader after server-side expiry, max",
        ms(max(after)) if after else "—",
        ms(max(tooz_after)) if tooz_after else "—",
        f"≤ {ms(AFTER_EXPIRY_TARGET, 0)}",
        verdict(bool(after) and max(after) <= AFTER_EXPIRY_TARGET),
    )
    section.summarize(
        f"PostgreSQL kill -9 → new leader p50 (Baton lease_ttl {TTL:g} s)",
        ms(baton_kill),
        ms(tooz_kill),
        NO_TARGET,
        NO_TARGET,
    )
    section.summarize(
        "PostgreSQL claim latency p99",
        ms(pg_p99, 2),
        "—",
        f"< {ms(CLAIM_P99_TARGET, 0)}",
        verdict(pg_p99 < CLAIM_P99_TARGET),
    )
    section.summarize(
        "PostgreSQL lease acquire+release cycles/s",
        f"{baton_rate:,.0f}/s",
        f"{tooz_rate:,.0f}/s",
        "≥ tooz",
        verdict(baton_rate >= tooz_rate),
    )
    pg_late, bare_late = percentile(baton_fires, 99), percentile(bare_fires, 99)
    section.summarize(
        "PostgreSQL fire lateness p99 (vs bare APScheduler)",
        ms(pg_late, 2),
        ms(bare_late, 2),
        f"≤ reference + {ms(lateness.P99_MARGIN, 0)} (issue 2)",
        verdict(pg_late <= bare_late + lateness.P99_MARGIN),
    )
    return section
