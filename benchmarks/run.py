"""Run the benchmarks and write BENCHMARKS.md.

``python -m benchmarks.run [--write FILE] [--quick] [--only NAME]...``

Sections (``--only`` takes these names, repeated or comma-separated):

* ``failover``  failover after SIGTERM and kill -9: Baton (Redis, SQLite) vs redis-py Lock
* ``lateness``  fire lateness on the leader vs bare APScheduler
* ``cycles``    lease acquire+release cycles per second vs redis-py Lock
* ``idle``      idle CPU and RSS of a leader and a follower
* ``zookeeper`` ZooKeeper rows: failover vs kazoo's Election, claim latency, lateness
* ``image``     the container image: size (total, Baton's own layers), build times
* ``scale``     N = 100 to 10,000 jobs due at one instant: Baton leader vs bare APScheduler
* ``postgresql`` PostgreSQL rows: handover and kill -9 failover vs tooz, claims, cycles, lateness
* ``sentinel``  Redis Sentinel rows: claims and cycles with min_replicas_ack vs redis-py Lock,
  failover of the primary (SENTINEL FAILOVER, kill -9) to the next accepted fire
* ``celery``    Celery beat under kill -9, SIGSTOP and a cut from Redis: Baton vs RedBeat
* ``etcd``      etcd rows: handover vs tooz (etcd3gw) and etcdctl elect, kill -9, claims, cycles
* ``redlock``   Redlock rows: cycles vs pottery's Redlock on 3 and 5 primaries, claims, handover,
  kill -9

``--quick`` is a smoke mode: few repetitions, short loops; its numbers are not for the page.
A section that fails is reported as "not measured" with the error, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from benchmarks import (
    celery_beat,
    cycles,
    etcd,
    failover,
    idle,
    image,
    lateness,
    postgresql,
    redis_sentinel,
    redlock,
    scale,
    zookeeper,
)
from benchmarks.machine import facts, load_average
from benchmarks.report import NOT_MEASURED, Section, Table

SECTIONS: dict[str, tuple[str, Callable[[bool, Path], Section]]] = {
    "failover": ("1. Failover: Baton vs redis-py Lock", failover.run),
    "lateness": ("2. Fire lateness: Baton leader vs bare APScheduler", lateness.run),
    "cycles": ("3. Lease acquire+release cycles per second", cycles.run),
    "idle": ("4. Idle CPU and memory", idle.run),
    "zookeeper": ("5. ZooKeeper backend vs kazoo", zookeeper.run),
    "image": ("6. Container image size and build time", image.run),
    "scale": (scale.TITLE, scale.run),
    "postgresql": (postgresql.TITLE, postgresql.run),
    "sentinel": (redis_sentinel.TITLE, redis_sentinel.run),
    "celery": (celery_beat.TITLE, celery_beat.run),
    "etcd": (etcd.TITLE, etcd.run),
    "redlock": (redlock.TITLE, redlock.run),
}


def parse_only(values: list[str] | None) -> list[str]:
    if not values:
        return list(SECTIONS)
    names = [name.strip() for value in values for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in SECTIONS]
    if unknown:
        raise SystemExit(
            f"benchmarks: unknown section(s) {', '.join(unknown)}; "
            f"choose from {', '.join(SECTIONS)}"
        )
    return [name for name in SECTIONS if name in names]


def run_section(name: str, quick: bool) -> tuple[Section, bool]:
    title, func = SECTIONS[name]
    started = time.monotonic()
    print(f"[bench] {name}: running", file=sys.stderr, flush=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"baton-bench-{name}-"))
    try:
        section = func(quick, workdir)
        ok = True
        shutil.rmtree(workdir, ignore_errors=True)
    except Exception as exc:
        traceback.print_exc()
        print(f"[bench] {name}: logs kept in {workdir}", file=sys.stderr, flush=True)
        section = Section(name, title)
        table = Table(["Measurement", "Result"])
        table.add(f"{NOT_MEASURED}: {type(exc).__name__}: {exc}", NOT_MEASURED)
        section.tables = [table]
        section.summarize(title, "—", "—", "—", f"{NOT_MEASURED}: section failed")
        ok = False
    section.seconds = time.monotonic() - started
    print(f"[bench] {name}: done in {section.seconds:.0f} s", file=sys.stderr, flush=True)
    return section, ok


def render(
    sections: list[Section], quick: bool, total: float, command: str, loads: tuple[str, str]
) -> str:
    lines = [
        "# Baton benchmarks",
        "",
        f"Written by `{command}`; do not edit by hand. Baton and each reference are measured "
        "in the same run, on the same machine, against servers the benchmark starts on "
        "127.0.0.1. Targets are those of issues 2 (core), 3 (ZooKeeper), 13 (many jobs), "
        "14 (PostgreSQL) and 18 (etcd); "
        "a MISS is reported as measured.",
        "",
    ]
    if quick:
        lines += ["**Quick smoke run (`--quick`): too few samples to judge targets.**", ""]
    machine = Table(["Fact", "Value"])
    for key, value in facts():
        machine.add(key, value)
    machine.add("load average 1/5/15 min, at start", loads[0])
    machine.add("load average 1/5/15 min, at end", loads[1])
    machine.add("total benchmark time", f"{total:.0f} s")
    lines += ["## Machine", "", machine.render(), ""]
    summary = Table(["Measurement", "Baton", "Reference", "Target", "Result"])
    for section in sections:
        for row in section.summary:
            summary.add(*row)
    if summary.rows:
        lines += ["## Summary", "", summary.render(), ""]
    for section in sections:
        lines.append(section.render())
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run", description="Baton benchmarks (see BENCHMARKS.md)."
    )
    parser.add_argument("--write", metavar="FILE", help="write the markdown report to FILE")
    parser.add_argument("--quick", action="store_true", help="smoke mode: few samples, fast")
    parser.add_argument(
        "--only", action="append", metavar="NAME", help=f"run only these: {', '.join(SECTIONS)}"
    )
    args = parser.parse_args(argv)
    names = parse_only(args.only)
    started = time.monotonic()
    load_before = load_average()
    sections, all_ok = [], True
    for name in names:
        section, ok = run_section(name, args.quick)
        sections.append(section)
        all_ok = all_ok and ok
    command = "python -m benchmarks.run"
    if args.write:
        command += f" --write {Path(args.write).name}"
    if args.quick:
        command += " --quick"
    if args.only:
        command += "".join(f" --only {name}" for name in names)
    loads = (load_before, load_average())
    text = render(sections, args.quick, time.monotonic() - started, command, loads)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
        print(f"[bench] wrote {args.write}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
