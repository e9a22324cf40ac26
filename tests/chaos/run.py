"""Run the chaos suite: 5 replicas, a seeded fault schedule, then the checker's verdict.

``python -m tests.chaos.run --backend redis --duration 600 --seed 7 --report CHAOS-redis.md``
(``--many-jobs 2000`` adds the many-jobs workload: see :mod:`tests.chaos.workload`;
``--backend sentinel|cluster --min-replicas-ack 1`` sets that URL option of the replicas)

The run starts the ledger server, the backend (and one proxy per replica), five replicas
under libfaketime, waits for the first ticks, then injects faults one at a time until
``--duration`` seconds have passed: pick a fault type (seeded), inject, hold, heal, wait
until a leader runs ticks again (bounded), pause 0.3-1 s. Then everything is healed, the
cluster runs quietly for ``--cooldown`` seconds, stops, and the checker reads the ledger.
Exit status: 0 if every invariant holds, 1 if one is violated, 2 on a setup error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos import checker
from tests.chaos.cluster import Replicas
from tests.chaos.faketime import FakeClocks, probe
from tests.chaos.faults import FAULT_TYPES, INJECTORS, Chaos, FaultRecord, applicable
from tests.chaos.proxy import ProxyLoop
from tests.chaos.records import ClaimRecorder
from tests.chaos.targets import KINDS, Target, make_target
from tests.chaos.workload import JOBS
from tests.harness.replicas import ROOT

REPLICAS = 5
LEASE_TTL = 2.0
#: Seconds to wait for a leader to run ticks again after a fault is healed.
RECOVERY_TIMEOUT = 15.0
#: Seconds to wait for the first tick after start-up.
STARTUP_TIMEOUT = 60.0


@dataclass
class Options:
    """One chaos run's parameters."""

    backend: str
    duration: float
    seed: int
    workdir: Path
    cooldown: float = 10.0
    faults: tuple[str, ...] = FAULT_TYPES
    gap: tuple[float, float] = (0.3, 1.0)
    command: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    #: Query options of the replicas' URL (Sentinel and Cluster: ``min_replicas_ack``).
    url_options: dict[str, str] = field(default_factory=dict)
    #: Redlock: how many independent primaries (3 or 5).
    primaries: int = 3
    #: Pairs of fault types kept at least ``apart`` seconds from each other (empty: none).
    keep_apart: tuple[tuple[str, str], ...] = ()
    apart: float = 0.0


class LedgerProcess:
    """The ledger server as a child process (not under libfaketime)."""

    def __init__(self, workdir: Path) -> None:
        self.db = workdir / "ledger.db"
        # Unix socket paths are limited to ~100 bytes: keep it short.
        self.socket = tempfile.mktemp(prefix="baton-ledger-", suffix=".sock", dir="/tmp")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.chaos.ledger",
                "--db",
                str(self.db),
                "--socket",
                self.socket,
            ],
            cwd=ROOT,
            stdout=(workdir / "ledger.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while not Path(self.socket).exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the ledger server did not start (see {workdir}/ledger.log)")
            time.sleep(0.02)

    def latest_tick(self) -> float:
        """Real time of the newest accepted chaos.tick start, 0 if none."""
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)) as db:
                row = db.execute(
                    "SELECT max(at) FROM writes WHERE job = 'chaos.tick' AND phase = 'start' "
                    "AND accepted = 1"
                ).fetchone()
        except sqlite3.Error:
            return 0.0
        return float(row[0] or 0.0)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(FileNotFoundError):
            Path(self.socket).unlink()


def _wait(condition: Any, timeout: float, interval: float = 0.1) -> bool:
    """Poll ``condition`` until true or ``timeout`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _too_close(kind: str, records: list[FaultRecord], options: Options) -> bool:
    """Whether ``kind`` must wait: a fault it is kept apart from ended < ``apart`` s ago."""
    now = time.time()
    for a, b in options.keep_apart:
        other = b if kind == a else a if kind == b else None
        if other and any(r.type == other and now - r.recovered < options.apart for r in records):
            return True
    return False


def _claim_epoch(target: Target, record: FaultRecord, seen: str | None) -> str | None:
    """Note on ``record`` a claim epoch opened since ``seen`` (Redis Sentinel and Cluster:
    an acquisition on a server other than the last one's refuses every fire without a
    record up to its clock plus the claim allowance); returns the epoch now."""
    epoch = target.claim_epoch()
    if epoch is not None and epoch != seen:
        record.params["claim_epoch"] = epoch
        record.params["claim_epoch_end"] = int(epoch.split(":")[1]) / 1000
    return epoch if epoch is not None else seen


def log(message: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(options: Options) -> dict[str, Any]:
    """Run the suite; returns the checker's report (also written to the workdir)."""
    workdir = options.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(options.seed)
    cluster = f"chaos-{options.backend}-{options.seed}"
    kinds = [f for f in options.faults if applicable(f, options.backend)]
    skipped = [f for f in options.faults if f not in kinds]
    clocks = FakeClocks(workdir)
    probe(clocks)
    loop = ProxyLoop()
    target = make_target(
        options.backend, workdir, cluster, loop, options.url_options, options.primaries
    )
    ledger = LedgerProcess(workdir)
    replicas: Replicas | None = None
    recorder: ClaimRecorder | None = None
    records: list[FaultRecord] = []
    meta: dict[str, Any] = {
        "backend": options.backend,
        "seed": options.seed,
        "duration": options.duration,
        "replicas": REPLICAS,
        "lease_ttl": LEASE_TTL,
        "fault_types": kinds,
        "skipped_fault_types": skipped,
        "command": options.command,
        "many_jobs": options.extra.get("chaos_many_jobs", 0),
        "url_options": options.url_options,
        **({"primaries": options.primaries} if options.backend == "redlock" else {}),
        "cluster": cluster,
    }
    try:
        target.start()
        replicas = Replicas(
            workdir,
            target,
            clocks,
            cluster,
            ledger.socket,
            {"lease_ttl": LEASE_TTL, "shutdown_grace": 5, **options.extra},
        )
        for n in range(1, REPLICAS + 1):
            replicas.start(f"r{n}")
        started = time.time()
        if not _wait(lambda: ledger.latest_tick() > 0, STARTUP_TIMEOUT):
            raise RuntimeError(
                f"no tick within {STARTUP_TIMEOUT:.0f} s of start-up (see {workdir}/logs)"
            )
        meta["started"] = started
        meta["measure_start"] = time.time() + 1.0
        (workdir / "faults.jsonl").write_text("")
        (workdir / "run.json").write_text(json.dumps(meta, indent=2))
        log(f"{options.backend}: up; faults for {options.duration:.0f} s, seed {options.seed}")
        # The checker's evidence for ticks claimed by a leader killed before it ran them.
        recorder = ClaimRecorder(
            target.url_for("observer"),
            cluster,
            [job for job, (_, policy, _) in JOBS.items() if policy == "all"],
            workdir,
        )
        recorder.start()
        chaos = Chaos(target, replicas, clocks, rng, LEASE_TTL)
        end = time.monotonic() + options.duration
        fault_id = 0
        epoch = target.claim_epoch()
        while time.monotonic() < end:
            replicas.reap()
            kind = rng.choice(kinds)
            if _too_close(kind, records, options):
                continue
            record = INJECTORS[kind](chaos, fault_id + 1)
            if record is None:
                time.sleep(0.2)  # no leader to hit right now; pick again
                continue
            fault_id += 1
            healed = record.heal or time.time()
            recovered = _wait(
                lambda h=healed: ledger.latest_tick() > h and target.holder() is not None,
                RECOVERY_TIMEOUT,
            )
            record.recovered = time.time()
            record.recovery_timed_out = not recovered
            epoch = _claim_epoch(target, record, epoch)
            records.append(record)
            with (workdir / "faults.jsonl").open("a") as out:  # kept if the run is killed
                out.write(json.dumps(record.to_dict()) + "\n")
            log(
                f"#{record.id} {record.type} victim={record.victim} {record.params} "
                f"recovered in {record.recovered - healed:.1f} s"
                + ("" if recovered else " (TIMED OUT)")
            )
            time.sleep(rng.uniform(*options.gap))
        # Quiesce: undo everything, bring every replica back, let it run in peace.
        clocks.reset()
        target.heal_all()
        for name in replicas.names:
            replicas.resume(name)
        replicas.reap()
        quiet = time.time()
        _wait(lambda: ledger.latest_tick() > quiet, RECOVERY_TIMEOUT)
        time.sleep(options.cooldown)
        if records:
            _claim_epoch(target, records[-1], epoch)  # opened after the last recovery
        meta["measure_end"] = time.time() - 2.0
        recorder.stop()
        recorder = None
        replicas.stop_all()
        meta["stopped"] = time.time()
    finally:
        if recorder is not None:  # an interrupted run: no last read, the server may be gone
            recorder.abandon()
        if replicas is not None:
            replicas.stop_all(timeout=15)
            meta["unexpected_exits"] = replicas.unexpected_exits
            meta["logs"] = [str(r.log_path) for r in replicas.history]
        ledger.stop()
        target.close()
        loop.close()
        (workdir / "faults.jsonl").write_text(
            "".join(json.dumps(r.to_dict()) + "\n" for r in records)
        )
        meta.setdefault("measure_end", time.time() - 2.0)  # an interrupted run: up to now
        (workdir / "run.json").write_text(json.dumps(meta, indent=2))
    return checker.check(workdir)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--backend", choices=KINDS, required=True)
    parser.add_argument("--duration", type=float, default=120.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, help="default: a new directory under /tmp")
    parser.add_argument("--report", type=Path, help="also write the markdown report here")
    parser.add_argument("--cooldown", type=float, default=10.0, help="quiet seconds at the end")
    parser.add_argument(
        "--faults", default=",".join(FAULT_TYPES), help="comma-separated fault types to draw from"
    )
    parser.add_argument(
        "--many-jobs",
        type=int,
        default=0,
        metavar="N",
        help="also load N crowd jobs due together every 10 s (tests.chaos.workload; 0: none)",
    )
    parser.add_argument(
        "--min-replicas-ack",
        metavar="N",
        help="sentinel and cluster: the replicas' min_replicas_ack (default: Baton's, auto)",
    )
    parser.add_argument(
        "--primaries",
        type=int,
        choices=(3, 5),
        default=3,
        help="redlock: independent primaries (default 3)",
    )
    args = parser.parse_args(argv)
    if args.many_jobs < 0:
        parser.error("--many-jobs must be 0 or more")
    if args.primaries != 3 and args.backend != "redlock":
        parser.error("--primaries is for --backend redlock")
    url_options: dict[str, str] = {}
    if args.min_replicas_ack is not None:
        if args.backend not in ("sentinel", "cluster"):
            parser.error("--min-replicas-ack is for --backend sentinel or cluster")
        url_options["min_replicas_ack"] = args.min_replicas_ack
    workdir = args.workdir or Path(
        tempfile.mkdtemp(prefix=f"baton-chaos-{args.backend}-{args.seed}-")
    )
    replay = [
        "--backend",
        args.backend,
        "--duration",
        f"{args.duration:g}",
        "--seed",
        str(args.seed),
    ]
    if args.faults != parser.get_default("faults"):
        # Another list of types is another schedule: the seed alone would not replay it.
        replay += ["--faults", args.faults]
    if args.many_jobs:
        replay += ["--many-jobs", str(args.many_jobs)]
    if url_options:
        replay += ["--min-replicas-ack", url_options["min_replicas_ack"]]
    if args.primaries != 3:
        replay += ["--primaries", str(args.primaries)]
    command = "python -m tests.chaos.run " + shlex.join(replay)
    options = Options(
        backend=args.backend,
        duration=args.duration,
        seed=args.seed,
        workdir=workdir,
        cooldown=args.cooldown,
        faults=tuple(f for f in args.faults.split(",") if f),
        command=command,
        url_options=url_options,
        primaries=args.primaries,
        # Read by tests.chaos.workload in every replica (BATON_CHAOS_MANY_JOBS).
        extra={"chaos_many_jobs": args.many_jobs} if args.many_jobs else {},
    )
    unknown = [f for f in options.faults if f not in FAULT_TYPES]
    if unknown:
        parser.error(f"unknown fault types {unknown}; choose from {', '.join(FAULT_TYPES)}")
    # SIGTERM unwinds like Ctrl-C, so the replicas, servers and ledger this run started are
    # stopped, and what was recorded so far is kept and checked.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        report = run(options)
    except RuntimeError as exc:
        print(f"chaos: setup failed: {exc}", file=sys.stderr)
        return 2
    markdown = checker.markdown(report)
    print(markdown)
    if args.report is not None:
        args.report.write_text(markdown)
    print(f"workdir: {workdir}", file=sys.stderr)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
