"""Redlock rows (issue 19): Baton's ``redlock://`` backend vs pottery's ``Redlock``.

Both contenders run on the same independent redis-server primaries (3, then 5) on loopback,
servers addressed directly:

* acquire+release cycles per second from one client: Baton's ``try_acquire`` (a lock round
  and a seal round over every primary, in parallel: the fencing token from a majority) plus
  ``release`` (one round), against pottery's ``Redlock.acquire(blocking=False)`` plus
  ``release()`` (no token);
* claim latency on 3 primaries (one fire: ``CLAIM_LUA`` on every primary, a majority);
* graceful handover (SIGTERM) and failover after kill -9 of the leader replica: two Baton
  replicas on the 3 primaries (pottery has no leader election to compare with).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import redis

from benchmarks import cycles, failover
from benchmarks.contenders import BatonGroup
from benchmarks.report import NO_TARGET, NOT_MEASURED, Section, Table, verdict
from benchmarks.stats import ms, percentile
from benchmarks.zookeeper import claim_latencies
from scheduler.backends import from_url
from tests.harness.redlock_group import RedlockGroup

TITLE = "12. Redlock: Baton's redlock:// vs pottery's Redlock"
#: Lease TTL of the failover replicas, seconds (as in the other failover sections).
TTL = 2.0
#: Graceful handover target of issue 19, seconds.
HANDOVER_P50_TARGET = 0.020
BATON = "Baton, redlock:// backend (3 primaries)"
POTTERY = "pottery Redlock (reference)"


def pottery_cycle(masters: list[redis.Redis], key: str) -> Callable[[], None]:
    """pottery's ``Redlock`` acquire (non-blocking) + release on ``masters``."""
    from pottery import Redlock

    lock = Redlock(key=key, masters=frozenset(masters), auto_release_time=cycles.TTL)

    def cycle() -> None:
        if not lock.acquire(blocking=False):
            raise RuntimeError(f"pottery Redlock {key!r} unexpectedly held")
        lock.release()

    return cycle


def missing() -> str | None:
    """Why the section cannot run, or ``None``."""
    try:
        import pottery  # noqa: F401
    except ImportError as exc:
        return f"pottery is not installed ({exc}); pip install -e '.[dev]'"
    return None


def _rates(count: int, n: int, seconds: float) -> dict[str, list[float]]:
    group = RedlockGroup(count).start()
    try:
        backend = from_url(group.url(), op_timeout=2.0)
        # redis-py's default clients (bytes replies), as a pottery user makes them
        masters = [
            redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2.0) for server in group
        ]
        try:
            return cycles.rounds(
                {
                    "baton": cycles.baton_cycle(backend, "bench-cycles"),
                    "pottery": pottery_cycle(masters, "bench-cycles-pottery"),
                },
                n,
                seconds,
            )
        finally:
            backend.close()
            for client in masters:
                client.close()
    finally:
        group.cleanup()


def run(quick: bool, base: Path) -> Section:
    section = Section("redlock", TITLE)
    reason = missing()
    if reason is not None:
        table = Table(["Measurement", "Result"])
        table.add(f"{NOT_MEASURED}: {reason}", NOT_MEASURED)
        section.tables = [table]
        section.summarize("Redlock rows", "—", "—", "issue 19 targets", f"{NOT_MEASURED}")
        return section
    reps = 3 if quick else 10
    claims = 50 if quick else 1000
    n, seconds = (2, 0.5) if quick else (10, 1.0)

    rates = {count: _rates(count, n, seconds) for count in (3, 5)}

    group = RedlockGroup(3).start()
    try:
        backend = from_url(group.url(), op_timeout=2.0)
        try:
            latencies = claim_latencies(backend, "bench-claims", claims)
        finally:
            backend.close()
        baton = BatonGroup(
            BATON, group.url(), "bench-redlock", base / "baton", ["l1", "l2"], {"lease_ttl": TTL}
        )
        try:
            baton.start()
            found = failover.measure(
                [baton], {signal.SIGTERM: reps, signal.SIGKILL: reps}, TTL + 15
            )
        finally:
            baton.close()
    finally:
        group.cleanup()

    rate_table = Table(
        ["Primaries", "Contender", "cycles/s (median of rounds)", "range", "Target", "Result"]
    )
    for count, found_rates in rates.items():
        baton_rate = percentile(found_rates["baton"], 50)
        pottery_rate = percentile(found_rates["pottery"], 50)
        rate_table.add(
            count,
            "Baton try_acquire + release (lock, seal with the fencing token, release)",
            *cycles.cell(found_rates["baton"]),
            "≥ pottery",
            verdict(baton_rate >= pottery_rate),
        )
        rate_table.add(
            count,
            "pottery Redlock acquire(blocking=False) + release (no token)",
            *cycles.cell(found_rates["pottery"]),
            NO_TARGET,
            NO_TARGET,
        )
        section.summarize(
            f"Redlock acquire+release cycles/s, {count} primaries",
            f"{baton_rate:,.0f}/s",
            f"{pottery_rate:,.0f}/s",
            "≥ pottery",
            verdict(baton_rate >= pottery_rate),
        )
    claim_table = Table(["Call", "p50", "p99", "max", "n", "Target", "Result"])
    p99 = percentile(latencies, 99)
    claim_table.add(
        "Baton RedlockBackend.claim (one fire; CLAIM_LUA on 3 primaries, a majority)",
        ms(percentile(latencies, 50), 2),
        ms(p99, 2),
        ms(max(latencies), 2),
        len(latencies),
        NO_TARGET,
        NO_TARGET,
    )
    term = found[BATON][signal.SIGTERM]
    kill = found[BATON][signal.SIGKILL]
    term_p50 = percentile([r.failover for r in term], 50)
    handover = failover.sigterm_table([(BATON, term, "target")])
    handover.rows[0][-2] = f"p50 < {ms(HANDOVER_P50_TARGET, 0)}"
    handover.rows[0][-1] = verdict(term_p50 < HANDOVER_P50_TARGET)
    killed = failover.kill_table([(BATON, kill, "target")])
    section.tables = [rate_table, claim_table, handover, killed]
    section.method = [
        f"cycles: one client in the benchmark process; {n} rounds of {seconds:g} s per "
        f"contender, alternating, after {cycles.WARMUP_CYCLES} warm-up cycles; TTL / "
        f"auto_release_time {cycles.TTL:g} s; 3 then 5 fresh redis-server primaries without "
        "persistence; pottery's clients with redis-py's defaults, Baton's own bounded clients "
        "(every primary asked at once from a bounded thread pool);",
        f"claim: {claims} RedlockBackend.claim calls from one client holding the lease, fires "
        "10 s apart, each then started and finished untimed;",
        f"failover: two Baton replicas (lease_ttl {TTL:g} s) on 3 primaries; {reps} SIGTERM "
        f"repetitions (the leader releases on every primary, each publishes, the follower "
        f"subscribed to one primary wakes), then {reps} kill -9 repetitions (the follower "
        "waits for a majority of the primaries to expire the lease).",
    ]
    section.notes = [
        "pottery's Redlock hands out no fencing token; Baton's acquisition is two rounds "
        "over the primaries (the lock, then the token written back to a majority), so each "
        "cycle is three rounds to pottery's two.",
        "pottery has no leader election: the handover and kill -9 rows have no reference.",
    ]
    section.summarize(
        "Redlock claim latency p99 (3 primaries)", ms(p99, 2), "—", NO_TARGET, NO_TARGET
    )
    section.summarize(
        "Redlock graceful handover p50",
        ms(term_p50),
        "—",
        f"< {ms(HANDOVER_P50_TARGET, 0)}",
        verdict(term_p50 < HANDOVER_P50_TARGET),
    )
    kill_p50 = percentile([r.failover for r in kill], 50)
    section.summarize("Redlock kill -9 failover p50", ms(kill_p50), "—", NO_TARGET, NO_TARGET)
    return section
