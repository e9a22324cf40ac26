"""Lease acquire+release cycles per second from one client: Baton backends vs redis-py Lock.

Baton's cycle is ``try_acquire`` (which also issues a fencing token and stamps the holder)
plus ``release`` (which also publishes the release to waiting followers); redis-py's is
``Lock.acquire(blocking=False)`` plus ``Lock.release()``. Both are two round trips on Redis.
Rounds alternate between the two so drift in machine load hits both alike.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import redis

from benchmarks.report import NO_TARGET, NOT_MEASURED, Section, Table, verdict
from benchmarks.stats import percentile
from scheduler.backends import from_url
from scheduler.backends.base import LeaseBackend
from scheduler.leadership.lease import Holder
from tests.harness.redis_server import RedisServer

TTL = 10.0
WARMUP_CYCLES = 200


def baton_cycle(backend: LeaseBackend, name: str) -> Callable[[], None]:
    holder = Holder.new("bench")

    def cycle() -> None:
        lease = backend.try_acquire(name, holder, TTL)
        if lease is None:
            raise RuntimeError(f"{backend.url}: lease {name!r} unexpectedly held")
        backend.release(lease)

    return cycle


def lock_cycle(client: redis.Redis, key: str) -> Callable[[], None]:
    lock = client.lock(key, timeout=TTL)

    def cycle() -> None:
        if not lock.acquire(blocking=False):
            raise RuntimeError(f"redis-py lock {key!r} unexpectedly held")
        lock.release()

    return cycle


def tooz_cycle(url: str, name: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """tooz's ``acquire(blocking=False)`` + ``release()`` on the coordinator at ``url`` (etcd,
    PostgreSQL), and how to stop that coordinator."""
    from tooz import coordination

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # its PostgreSQL driver's
        coordinator = coordination.get_coordinator(url, b"bench-cycles")
    coordinator.start()
    lock = coordinator.get_lock(name.encode())

    def cycle() -> None:
        if not lock.acquire(blocking=False):
            raise RuntimeError(f"tooz lock {name!r} unexpectedly held")
        lock.release()

    return cycle, coordinator.stop


def rate(cycle: Callable[[], None], seconds: float) -> float:
    """Cycles per second of ``cycle`` run back to back for ``seconds``."""
    count = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        cycle()
        count += 1
        if count % 16 == 0 and time.perf_counter() >= end:
            break
    return count / (time.perf_counter() - start)


def rounds(
    contenders: dict[str, Callable[[], None]], n: int, seconds: float
) -> dict[str, list[float]]:
    """``n`` rounds; in each, every contender runs ``seconds`` (order alternates)."""
    for cycle in contenders.values():
        for _ in range(WARMUP_CYCLES):
            cycle()
    found: dict[str, list[float]] = {label: [] for label in contenders}
    labels = list(contenders)
    for i in range(n):
        for label in labels if i % 2 == 0 else reversed(labels):
            found[label].append(rate(contenders[label], seconds))
    return found


def cell(values: list[float]) -> tuple[str, str]:
    return f"{percentile(values, 50):,.0f}", f"{min(values):,.0f} to {max(values):,.0f}"


def tooz_table(baton: str, rates: dict[str, list[float]]) -> Table:
    """Cycles/s of Baton (row ``baton``, ``rates["baton"]``; target: at least tooz's median)
    and of tooz's lock (``rates["tooz"]``, the reference). More rows may be added after."""
    baton_rate = percentile(rates["baton"], 50)
    tooz_rate = percentile(rates["tooz"], 50)
    table = Table(["Contender", "cycles/s (median of rounds)", "range", "Target", "Result"])
    table.add(baton, *cell(rates["baton"]), "≥ tooz", verdict(baton_rate >= tooz_rate))
    table.add(
        "tooz lock acquire(blocking=False) + release (reference)",
        *cell(rates["tooz"]),
        NO_TARGET,
        NO_TARGET,
    )
    return table


def zookeeper_rates(n: int, seconds: float) -> tuple[list[float] | None, str]:
    """ZooKeeperBackend cycles, or ``None`` and why not."""
    try:
        from tests.harness.zookeeper_server import ZooKeeperServer
    except ImportError as exc:
        return None, f"{NOT_MEASURED}: ZooKeeper harness missing ({exc})"
    try:
        server = ZooKeeperServer().start()
    except Exception as exc:
        return None, f"{NOT_MEASURED}: ZooKeeper server did not start ({exc})"
    try:
        backend = from_url(server.url("/bench"), op_timeout=2.0)
        try:
            found = rounds({"zk": baton_cycle(backend, "bench-cycles")}, n, seconds)
        finally:
            backend.close()
        return found["zk"], ""
    except Exception as exc:
        return None, f"{NOT_MEASURED}: {type(exc).__name__}: {exc}"
    finally:
        server.cleanup()


def run(quick: bool, base: Path) -> Section:
    n, seconds = (2, 0.5) if quick else (10, 1.0)
    section = Section("cycles", "3. Lease acquire+release cycles per second (one client)")
    server = RedisServer().start()
    try:
        backend = from_url(server.url, op_timeout=2.0)
        client = redis.Redis.from_url(server.url)
        try:
            redis_found = rounds(
                {
                    "baton": baton_cycle(backend, "bench-cycles"),
                    "lock": lock_cycle(client, "bench-cycles-lock"),
                },
                n,
                seconds,
            )
        finally:
            backend.close()
            client.close()
    finally:
        server.cleanup()
    sqlite = from_url(f"sqlite:///{base}/baton.db", op_timeout=2.0)
    try:
        sqlite_found = rounds({"sqlite": baton_cycle(sqlite, "bench-cycles")}, n, seconds)
    finally:
        sqlite.close()
    zk_found, zk_reason = (None, "skipped in --quick") if quick else zookeeper_rates(n, seconds)

    baton_p50 = percentile(redis_found["baton"], 50)
    lock_p50 = percentile(redis_found["lock"], 50)
    table = Table(["Contender", "cycles/s (median of rounds)", "range", "Target", "Result"])
    table.add(
        "Baton RedisBackend try_acquire + release (fencing token)",
        *cell(redis_found["baton"]),
        "≥ redis-py Lock",
        verdict(baton_p50 >= lock_p50),
    )
    table.add(
        "redis-py Lock acquire + release (reference)",
        *cell(redis_found["lock"]),
        NO_TARGET,
        NO_TARGET,
    )
    table.add(
        "Baton SqliteBackend (embedded, for information)",
        *cell(sqlite_found["sqlite"]),
        NO_TARGET,
        NO_TARGET,
    )
    if zk_found is not None:
        table.add("Baton ZooKeeperBackend (for information)", *cell(zk_found), NO_TARGET, NO_TARGET)
    else:
        table.add("Baton ZooKeeperBackend (for information)", zk_reason, "—", NO_TARGET, NO_TARGET)
    section.tables = [table]
    section.method = [
        f"one client in the benchmark process, cycles back to back; {n} rounds of "
        f"{seconds:g} s per contender, alternating, after {WARMUP_CYCLES} warm-up cycles; "
        f"lease TTL / lock timeout {TTL:g} s;",
        "Redis: a local redis-server over loopback TCP, redis-py with its default client "
        "options for the Lock, Baton's own bounded client (no retries, socket timeouts);",
        "SQLite: a WAL database file in the temp directory; ZooKeeper: a local standalone "
        "server with forceSync on (each acquire creates a sequential node, each release "
        "deletes it).",
    ]
    section.summarize(
        "Lease acquire+release cycles/s (Redis)",
        f"{baton_p50:,.0f}/s",
        f"{lock_p50:,.0f}/s",
        "≥ redis-py Lock",
        verdict(baton_p50 >= lock_p50),
    )
    return section
