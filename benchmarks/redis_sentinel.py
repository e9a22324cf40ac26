"""Redis Sentinel rows (issue 15): replication acknowledgements and primary failover.

One Sentinel group from the test harness (a primary, 2 replicas and 3 Sentinels on loopback
ports, servers addressed directly: no proxy on any call) serves every measurement:

* claim latency (one fire, and 1,000 at once) and lease acquire+release cycles per second
  with ``min_replicas_ack`` 0, 1 and ``auto`` (here 2: ``WAIT`` after the acquire, the claim
  and the start, ``scheduler/backends/redis/acks.py``), next to redis-py's ``Lock`` and to
  Baton's single-primary client (``redis://``), all on the same primary;
* failover time of the Redis primary, seen from the jobs: two Baton replicas run a job every
  second on the Sentinel URL; after ``SENTINEL FAILOVER`` or a kill -9 of the primary, the
  time from the fault to the first fire that runs and whose claim the new primary's ledger
  holds.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from benchmarks import cycles
from benchmarks.contenders import BatonGroup
from benchmarks.postgresql import BATCH, claim_batches
from benchmarks.procs import json_lines, wait_for
from benchmarks.report import NO_TARGET, NOT_MEASURED, Section, Table
from benchmarks.stats import ms, percentile
from benchmarks.zookeeper import claim_latencies
from scheduler.backends import from_url
from scheduler.backends.base import LeaseBackend

TITLE = "9. Redis Sentinel: replication acknowledgements and primary failover"
#: The ``min_replicas_ack`` values measured, as written in the URL.
ACKS = ("0", "1", "auto")
#: The job of the failover runs (``benchmarks/jobs.py``) and its period, seconds.
JOB = "bench.tick"
EVERY = 1.0
#: A fault is injected this long after a fire instant: with no fault, the next fire would
#: start this much later (its lateness aside).
PHASE = 0.5
#: Seconds to wait for the first accepted fire after a fault.
FIRE_TIMEOUT = 60.0
#: Seconds from the end of one repetition to the next fault: a Sentinel starts no automatic
#: failover within 2 x failover-timeout of the previous one (a kill -9 sooner would measure
#: that wait).
FAILOVER_GAP = 2 * 3.0 + 1.0
#: Sentinel log timestamps (``pid:X 12 Mar 2024 13:39:03.123 # +switch-master ...``).
_LOG_TIME = "%d %b %Y %H:%M:%S.%f"

FAULTS = ("SENTINEL FAILOVER", "kill -9 of the primary")
#: ``min_replicas_ack`` of the Baton replicas in the failover runs.
FAILOVER_ACKS = ("1", "auto")
#: Seconds a killed primary is kept down in the extra ``auto`` repetition.
KEPT_DOWN = 20.0


@dataclass(frozen=True)
class FaultRep:
    """One fault, in seconds from the moment it was injected.

    Attributes:
        fault: one of :data:`FAULTS`.
        to_fire: to the start of the first accepted fire (run by the job, claim in the new
            primary's ledger).
        to_switch: to the first ``+switch-master`` a Sentinel logged (``None``: not found).
        to_rejoin: (kill -9) to the killed server replicating again from the new primary.
        skipped: fire instants between the fault and that fire's start that never ran.
        unrecorded: fires that ran after the fault but whose claim the ledger lacks.
        duplicates: fire instants run more than once (over the whole run).
        new_leader: that fire ran under another fencing token than the last one before
            the fault (the leadership changed hands).
    """

    fault: str
    to_fire: float
    to_switch: float | None
    to_rejoin: float | None
    skipped: int
    unrecorded: int
    duplicates: int
    new_leader: bool


def lock_latencies(client: redis.Redis, key: str, count: int) -> list[float]:
    """Seconds per ``Lock.acquire(blocking=False)`` (one ``SET NX PX``), released untimed."""
    lock = client.lock(key, timeout=cycles.TTL)
    out = []
    for _ in range(count):
        started = time.perf_counter()
        if not lock.acquire(blocking=False):
            raise RuntimeError(f"redis-py lock {key!r} unexpectedly held")
        out.append(time.perf_counter() - started)
        lock.release()
    return out


def lock_wait_cycle(client: redis.Redis, key: str, replicas: int) -> Callable[[], None]:
    """redis-py ``Lock`` with ``WAIT replicas`` after the acquire (what Redisson does)."""
    lock = client.lock(key, timeout=cycles.TTL)

    def cycle() -> None:
        if not lock.acquire(blocking=False):
            raise RuntimeError(f"redis-py lock {key!r} unexpectedly held")
        acked = int(client.execute_command("WAIT", replicas, 1000))  # type: ignore[no-untyped-call]
        if acked < replicas:
            raise RuntimeError(f"WAIT {replicas}: {acked} replicas acknowledged")
        lock.release()

    return cycle


def switch_times(logs: list[Path]) -> list[float]:
    """Wall times of every ``+switch-master`` in these Sentinel logs."""
    found = []
    for log in logs:
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            if "+switch-master" not in line:
                continue
            try:
                stamp = " ".join(line.split(":", 1)[1].split()[1:5])
                found.append(datetime.strptime(stamp, _LOG_TIME).timestamp())
            except (IndexError, ValueError):
                continue
    return found


def fires(path: Path) -> list[tuple[float, float]]:
    """(scheduled instant, start) of every run the job recorded, in start order."""
    return [(scheduled, start) for scheduled, start, _ in runs(path)]


def runs(path: Path) -> list[tuple[float, float, int]]:
    """(scheduled instant, start, fencing token) of every run recorded, in start order."""
    out = [
        (
            float(r["scheduled"]),
            float(r["scheduled"]) + float(r["lateness"]),
            int(r["token"]),
        )
        for r in json_lines(path)
    ]
    return sorted(out, key=lambda run: run[1])


def ledger_instants(observer: LeaseBackend, cluster: str) -> set[float] | None:
    """Fire instants (ms-rounded) the ledger holds for the job; ``None`` while unreachable."""
    try:
        records = observer.history(cluster, JOB, 200)
    except Exception:
        return None
    return {round(r.scheduled_time.timestamp(), 3) for r in records if r.outcome != "claimed"}


class FailoverRun:
    """Two Baton replicas with a job every second on the Sentinel group, and the faults."""

    def __init__(self, group: Any, label: str, url: str, cluster: str, workdir: Path) -> None:
        self.group = group
        self.out = workdir / "fires.jsonl"
        self.cluster = cluster
        self.baton = BatonGroup(
            label,
            url,
            self.cluster,
            workdir,
            ["s1", "s2"],
            {},
            env={"BATON_BENCH_EVERY": f"{round(EVERY * 1000)}ms", "BATON_BENCH_OUT": str(self.out)},
        )
        self.last_failover = 0.0

    def start(self) -> None:
        self.baton.start()
        wait_for(self.baton.leader, 30, f"{self.baton.label}: a leader")

    def close(self) -> None:
        self.baton.close()

    def _flowing(self) -> float:
        """Wait until a fire runs after now; then until :data:`PHASE` after a fire instant.
        Returns the moment reached."""
        since = time.time()
        wait_for(
            lambda: any(start > since for _, start in fires(self.out)),
            FIRE_TIMEOUT,
            f"{self.baton.label}: fires flowing",
            interval=0.05,
        )
        wait = self.last_failover + FAILOVER_GAP - time.time()
        if wait > 0:
            time.sleep(wait)
        now = time.time()
        at = math.floor(now / EVERY) * EVERY + PHASE
        if at <= now:
            at += EVERY
        time.sleep(at - time.time())
        return at

    def _accepted(self, since: float) -> tuple[float, float] | None:
        """(instant, start) of the first fire that started after ``since`` and whose claim
        the ledger holds, if any yet."""
        after = [fire for fire in fires(self.out) if fire[1] > since]
        if not after:
            return None
        ledger = ledger_instants(self.baton.cluster.observer, self.cluster)
        if ledger is None:
            return None
        for scheduled, start in after:
            if round(scheduled, 3) in ledger:
                return scheduled, start
        return None

    def one(self, fault: str, kept_down: float = 0.0) -> FaultRep:
        """Inject ``fault``, measure, and heal the group.

        A killed primary is restarted as soon as the Sentinels promoted another (as a
        supervisor would) and rejoins as a replica; with ``kept_down`` > 0 it stays down
        until the first accepted fire, or for ``kept_down`` seconds if none comes.
        """
        if not all(r.alive for r in self.baton.cluster.replicas.values()):
            raise RuntimeError(f"{self.baton.label}: a Baton replica exited")
        self._flowing()
        sent = time.time()
        rejoined: float | None = None
        if fault == FAULTS[0]:
            self.group.failover()
        else:
            killed = self.group.kill_primary()
            if kept_down:
                with contextlib.suppress(TimeoutError):
                    wait_for(lambda: self._accepted(sent), kept_down, "a fire", interval=0.05)
            self.group.rejoin(killed)
            rejoined = time.time() - sent
        _, start = wait_for(
            lambda: self._accepted(sent),
            FIRE_TIMEOUT,
            f"{self.baton.label}: a fire after {fault}",
            interval=0.05,
        )
        self.last_failover = time.time()
        ran = fires(self.out)
        tokens = {start: token for _, start, token in runs(self.out)}
        before = [tokens[t] for _, t in ran if t < sent]
        ledger = ledger_instants(self.baton.cluster.observer, self.cluster) or set()
        unrecorded = [s for s, t in ran if sent < t < start + EVERY and round(s, 3) not in ledger]
        instants = [round(s, 3) for s, _ in ran]
        skipped = sum(
            1
            for k in range(math.ceil(sent / EVERY), math.ceil(start / EVERY))
            if round(k * EVERY, 3) not in instants
        )
        logs = [s.log_path for s in self.group.sentinel_servers]
        switched = [t for t in switch_times(logs) if t > sent]
        return FaultRep(
            fault,
            start - sent,
            min(switched) - sent if switched else None,
            rejoined,
            skipped,
            len(unrecorded),
            len(instants) - len(set(instants)),
            bool(before) and tokens[start] != before[-1],
        )


def claim_table(rows: list[tuple[str, list[float], int]]) -> Table:
    """Rows: (call, seconds per call, digits of the milliseconds shown)."""
    table = Table(["Call", "p50", "p99", "max", "n"])
    for label, values, digits in rows:
        table.add(
            label,
            ms(percentile(values, 50), digits),
            ms(percentile(values, 99), digits),
            ms(max(values), digits),
            len(values),
        )
    return table


def failover_table(rows: list[tuple[str, str, list[FaultRep]]]) -> Table:
    """Rows: (fault, Baton's min_replicas_ack, repetitions)."""
    table = Table(
        [
            "Fault",
            "Baton min_replicas_ack",
            "fault → next accepted fire p50",
            "max",
            "fault → Sentinel +switch-master p50",
            "fault → killed server replicating again p50",
            "fire instants skipped (total)",
            "fires run but not in the ledger (total)",
            "instants run twice",
            "leadership changed hands (reps)",
            "n",
        ]
    )
    for fault, ack, found in rows:
        fire = [r.to_fire for r in found]
        switch = [r.to_switch for r in found if r.to_switch is not None]
        rejoin = [r.to_rejoin for r in found if r.to_rejoin is not None]
        table.add(
            fault,
            ack,
            ms(percentile(fire, 50), 0),
            ms(max(fire), 0),
            ms(percentile(switch, 50), 0) if switch else "—",
            ms(percentile(rejoin, 50), 0) if rejoin else "—",
            sum(r.skipped for r in found),
            sum(r.unrecorded for r in found),
            max(r.duplicates for r in found),
            sum(r.new_leader for r in found),
            len(found),
        )
    return table


def missing() -> str | None:
    """Why the Sentinel rows cannot be measured, or ``None`` when they can."""
    try:
        from tests.harness.redis_server import redis_server_binary

        redis_server_binary()
    except Exception as exc:
        return f"no redis-server: {exc}"
    return None


def run(quick: bool, base: Path) -> Section:
    section = Section("sentinel", TITLE)
    reason = missing()
    if reason is not None:
        table = Table(["Measurement", "Result"])
        table.add(f"{NOT_MEASURED}: {reason}", NOT_MEASURED)
        section.tables = [table]
        section.summarize("Redis Sentinel rows", "—", "—", "—", f"{NOT_MEASURED}: {reason}")
        return section
    from tests.harness.redis_sentinel import SentinelGroup

    claims_n = 50 if quick else 1000
    batches_n = 3 if quick else 20
    n, seconds = (2, 0.5) if quick else (10, 1.0)
    reps = 1 if quick else 5
    kept_down = 5.0 if quick else KEPT_DOWN
    group = SentinelGroup(partitionable=False).start()
    try:
        primary = group.primary()
        host, port = group.address(primary)
        replicas = len(group.replicas())
        labels = {ack: f"Baton, Sentinel, min_replicas_ack={ack}" for ack in ACKS}
        labels["auto"] = f"Baton, Sentinel, min_replicas_ack=auto ({replicas})"
        labels["single"] = "Baton, redis:// to the same primary, min_replicas_ack=0"
        urls = {ack: group.url(min_replicas_ack=ack) for ack in ACKS}
        urls["single"] = f"redis://{host}:{port}/0?min_replicas_ack=0"
        backends = {key: from_url(url, op_timeout=2.0) for key, url in urls.items()}
        client = redis.Redis(host=host, port=port)
        try:
            claims: dict[str, list[float]] = {}
            batches: dict[str, list[float]] = {}
            for key, backend in backends.items():
                claims[key] = claim_latencies(backend, f"bench-claims-{key}", claims_n)
                batches[key] = claim_batches(backend, f"bench-batches-{key}", batches_n)
            claims["lock"] = lock_latencies(client, "bench-claims-lock", claims_n)
            contenders = {
                key: cycles.baton_cycle(backend, f"bench-cycles-{key}")
                for key, backend in backends.items()
            }
            contenders["lock"] = cycles.lock_cycle(client, "bench-cycles-lock")
            contenders["lock+wait"] = lock_wait_cycle(client, "bench-cycles-lockwait", 1)
            rates = cycles.rounds(contenders, n, seconds)
        finally:
            for backend in backends.values():
                backend.close()
            client.close()
        labels["lock"] = "redis-py Lock.acquire(blocking=False), same primary (reference)"

        found: dict[tuple[str, str], list[FaultRep]] = {}
        for ack in FAILOVER_ACKS:
            url = group.url() if ack == "auto" else group.url(min_replicas_ack=ack)
            failover = FailoverRun(
                group,
                f"Baton, Sentinel, min_replicas_ack={ack}",
                url,
                f"bench-sentinel-{ack}",
                base / f"failover-{ack}",
            )
            try:
                failover.start()
                for _ in range(reps):
                    for fault in FAULTS:
                        found.setdefault((fault, ack), []).append(failover.one(fault))
                if ack == "auto":
                    stall = failover.one(FAULTS[1], kept_down=kept_down)
            finally:
                failover.close()
    finally:
        group.cleanup()

    lock_rate = percentile(rates["lock"], 50)
    rate_table = Table(["Contender", "cycles/s (median of rounds)", "range", "vs redis-py Lock"])
    rate_rows = [
        *((key, f"{labels[key]}: try_acquire + release") for key in (*ACKS, "single")),
        ("lock", "redis-py Lock acquire + release, same primary (reference)"),
        ("lock+wait", "redis-py Lock acquire + WAIT 1 + release (for information)"),
    ]
    for key, label in rate_rows:
        rate = percentile(rates[key], 50)
        rate_table.add(label, *cycles.cell(rates[key]), f"{rate / lock_rate:.2f}x")

    section.tables = [
        claim_table(
            [
                *((f"{labels[k]}: claim (one fire)", claims[k], 2) for k in (*ACKS, "single")),
                (labels["lock"], claims["lock"], 2),
                *(
                    (f"{labels[k]}: claim_many ({BATCH:,} fires, per batch)", batches[k], 1)
                    for k in (*ACKS, "single")
                ),
            ]
        ),
        rate_table,
        failover_table(
            [
                *((fault, ack, found[(fault, ack)]) for ack in FAILOVER_ACKS for fault in FAULTS),
                (f"{FAULTS[1]}, killed server kept down {kept_down:g} s", "auto", [stall]),
            ]
        ),
    ]
    section.method = [
        f"one Sentinel group of the test harness: a primary, {replicas} replicas and 3 "
        "Sentinels (quorum 2) on 127.0.0.1, every client connected to the servers directly "
        "(no proxy); Baton's clients find the primary through the Sentinels "
        "(redis+sentinel://), the reference and the redis:// row connect to that primary;",
        f"claim: {claims_n} RedisBackend.claim calls in a loop from one client holding the "
        "lease, fires 10 s apart, each then started and finished untimed as the runner does "
        "(the start is acknowledged too); claim_many: "
        f"{batches_n} batches of one fire each of {BATCH:,} jobs due at one instant; "
        "with min_replicas_ack > 0 each call is one pipeline: the script, an INCR, and "
        "WAIT n (timeout op_timeout/2 = 1 s); the reference row is one Lock.acquire "
        "(SET NX PX), released untimed;",
        f"cycles: one client, {n} rounds of {seconds:g} s per contender, alternating, after "
        f"{cycles.WARMUP_CYCLES} warm-up cycles (as section 3); only the acquire is "
        "acknowledged (the release is not); with auto, each acquire also reads INFO "
        "replication to count the replicas;",
        f"failover: 2 `baton run` replicas on the Sentinel URL (default lease timings: "
        f"lease_ttl 10 s) running a job every {EVERY:g} s that appends its start time; "
        f"first with min_replicas_ack=1, then with auto (the default: 2 here); the fault is "
        f"injected {PHASE:g} s after a fire instant (so with no fault the next fire starts "
        f"{PHASE:g} s later) and at least {FAILOVER_GAP:g} s after the previous repetition "
        "ended (Sentinel starts no new failover sooner); fault → next accepted fire = the start "
        "of the first fire that ran after the fault and whose claim is in the ledger of the "
        "new primary (read through the Sentinels), minus the moment the fault was sent "
        "(SENTINEL FAILOVER to a Sentinel, or SIGKILL to the primary's redis-server); the "
        "killed server is restarted as soon as the Sentinels have promoted another (as a "
        "supervisor would) and rejoins as a replica, except in the last row, where it is "
        f"kept down {kept_down:g} s first; {reps} repetitions of each fault, alternating; "
        "+switch-master from the Sentinels' own logs; skipped instants, fires missing from "
        "the ledger and instants run twice from the job's own records.",
    ]
    section.notes = [
        "The harness's Sentinels run with fast timings: down-after-milliseconds 1000, "
        "failover-timeout 3000, and SENTINEL DEBUG periods (INFO every 1 s instead of 10 s, "
        "PING every 0.2 s instead of 1 s). With production settings (down-after often 5-30 s) "
        "a kill -9 takes correspondingly longer; these failover times are a lower bound.",
        "Issue 15 sets no numeric target for these rows: they are for information, next to "
        "redis-py's Lock and Baton's single-primary client (section 3's comparison) on the "
        "same server. WAIT costs one replication round trip, on loopback here; across hosts "
        "or zones it costs the network latency to the slowest of the n replicas.",
        "Fires run but not in the ledger: a fire that ran after the fault whose claim the "
        "new primary does not have. With min_replicas_ack=1 a claim acknowledged by the "
        "replica that is not promoted is lost this way (the old primary takes writes until "
        "Sentinel demotes it); with auto every replica must acknowledge, and such a claim "
        "stays in doubt instead.",
        "min_replicas_ack=auto counts the connected replicas when a replica acquires the "
        "lease. After a kill -9 of the primary the leader keeps its lease on the promoted "
        "replica and still asks for that count, which one fewer replica cannot give: no "
        "fire is accepted until the killed server is back (the kept-down row). "
        "min_replicas_ack=1 keeps firing with one replica gone.",
        "A repetition in which the leadership changed hands waits for the old leader's "
        "lease to expire on the new primary (lease_ttl 10 s by default) before the new "
        "leader fires; one where the leader kept its lease fires as soon as its claims are "
        "acknowledged again (an in-doubt claim is settled first, by resending it).",
    ]
    for ack in ACKS:
        section.summarize(
            f"Redis Sentinel claim latency p99, {labels[ack].removeprefix('Baton, Sentinel, ')}",
            ms(percentile(claims[ack], 99), 2),
            ms(percentile(claims["lock"], 99), 2) + " (Lock.acquire)",
            NO_TARGET,
            NO_TARGET,
        )
    for ack in ACKS:
        section.summarize(
            f"Redis Sentinel acquire+release cycles/s, "
            f"{labels[ack].removeprefix('Baton, Sentinel, ')}",
            f"{percentile(rates[ack], 50):,.0f}/s",
            f"{lock_rate:,.0f}/s",
            NO_TARGET,
            NO_TARGET,
        )
    for ack in FAILOVER_ACKS:
        for fault in FAULTS:
            fire = [r.to_fire for r in found[(fault, ack)]]
            section.summarize(
                f"Redis Sentinel {fault} → next accepted fire, p50 / max "
                f"(min_replicas_ack={ack}, job every {EVERY:g} s)",
                f"{ms(percentile(fire, 50), 0)} / {ms(max(fire), 0)}",
                "—",
                NO_TARGET,
                NO_TARGET,
            )
    return section
