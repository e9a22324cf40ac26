"""Idle CPU and memory of a leader and a follower: Baton vs redis-py Lock + APScheduler."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

from benchmarks.contenders import BatonGroup, Group, RedisLockGroup, RedisSubscribers
from benchmarks.procs import cpu_seconds, rss_bytes, wait_for
from benchmarks.report import NO_TARGET, Section, Table
from tests.harness.redis_server import RedisServer

#: Seconds of warm-up after both groups have a leader and a waiting follower.
WARMUP = 3.0
#: Lease TTL / lock timeout: Baton's default.
TTL = 10.0


def run(quick: bool, base: Path) -> Section:
    window = 4.0 if quick else 20.0
    section = Section("idle", "4. Idle CPU and memory (leader and follower)")
    server = RedisServer().start()
    groups: list[Group] = []
    rows: list[tuple[str, str, float, int]] = []
    try:
        client = server.client()
        baton = BatonGroup(
            "Baton replica",
            server.url,
            "bench-idle",
            base / "baton",
            ["i1", "i2"],
            {},
            env={"BATON_BENCH_EVERY": "1s"},
            waiting=RedisSubscribers(client, "bench-idle"),
        )
        reference = RedisLockGroup(
            "redis-py Lock + APScheduler (reference)",
            server.url,
            "bench-idle-lock",
            base / "lock",
            ["k1", "k2"],
            TTL,
            job_every=1.0,
        )
        groups = [baton, reference]
        for group in groups:
            group.start()
        pids: dict[tuple[str, str], int] = {}
        for group in groups:
            leader, _ = wait_for(group.leader, 30, f"{group.label}: a leader")
            wait_for(partial(group.ready, leader), 30, f"{group.label}: follower ready")
            follower = next(name for name in group.names if name != leader)
            pids[(group.label, "leader")] = group.pid(leader)
            pids[(group.label, "follower")] = group.pid(follower)
        time.sleep(WARMUP)
        before = {key: cpu_seconds(pid) for key, pid in pids.items()}
        started = time.monotonic()
        time.sleep(window)
        elapsed = time.monotonic() - started
        after = {key: cpu_seconds(pid) for key, pid in pids.items()}
        for key, pid in pids.items():
            label, role = key
            rows.append((label, role, (after[key] - before[key]) / elapsed * 100, rss_bytes(pid)))
        # Same leaders at the end, or the window measured a failover, not idling.
        for group in groups:
            now = group.leader()
            if now is None or group.pid(now[0]) != pids[(group.label, "leader")]:
                raise RuntimeError(f"{group.label}: leadership changed during the idle window")
        client.close()
    finally:
        for group in groups:
            group.close()
        server.cleanup()
    table = Table(["Process", "Role", "CPU (% of one core)", "RSS", "Target", "Result"])
    for label, role, cpu, rss in rows:
        table.add(label, role, f"{cpu:.2f} %", f"{rss / 2**20:.1f} MiB", NO_TARGET, NO_TARGET)
    section.tables = [table]
    section.method = [
        f"two processes per contender on one Redis server, lease TTL / lock timeout {TTL:g} s "
        "(Baton's default; renewal every ttl/3 for both), a 1 s interval job in every process "
        "(Baton: an empty @singleton_job; reference: an empty APScheduler job that would act "
        "only while holding the lock);",
        f"CPU = utime+stime from /proc/<pid>/stat over a {window:g} s window, after "
        f"{WARMUP:g} s of warm-up; RSS = VmRSS from /proc/<pid>/status at the end;",
        "the reference follower polls acquire() every 0.1 s; Baton's follower waits on pub/sub "
        "with a timeout of the leader's remaining TTL (at most renew_interval).",
    ]
    by = {(label, role): (cpu, rss) for label, role, cpu, rss in rows}
    for role in ("leader", "follower"):
        b_cpu, b_rss = by[("Baton replica", role)]
        r_cpu, r_rss = by[("redis-py Lock + APScheduler (reference)", role)]
        section.summarize(
            f"Idle {role}: CPU, RSS",
            f"{b_cpu:.2f} %, {b_rss / 2**20:.0f} MiB",
            f"{r_cpu:.2f} %, {r_rss / 2**20:.0f} MiB",
            "none (informative)",
            NO_TARGET,
        )
    return section
