"""``make demo``: three replicas on the embedded backend, a leader crash, and a verdict.

Starts three ``baton run`` processes sharing one SQLite file, lets the example heartbeat
(every 2 s) run, ``kill -9``s the leader, later stops the next leader with SIGTERM, then
prints who ran each tick and checks, against the heartbeat's own ledger file (not the
backend), that every tick from the first to the last ran exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from scheduler.backends import from_url
from scheduler.backends.base import LeaseBackend
from scheduler.leadership.lease import LeaseRecord

JOB = "examples.heartbeat"
INTERVAL = timedelta(seconds=2)
LEASE_TTL = 4.0


@dataclass
class Phase:
    """Seconds to wait before each event of the demo."""

    settle: float = 10.0  # after the first leader appears, before the crash
    after_crash: float = 10.0  # after the new leader appears, before SIGTERM
    after_handover: float = 6.0  # before stopping everything


def _say(text: str) -> None:
    print(text, flush=True)


def _wait_leader(
    backend: LeaseBackend, cluster: str, not_token: int | None, timeout: float
) -> LeaseRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = backend.read(cluster)
        if record is not None and record.token != not_token:
            return record
        time.sleep(0.005)
    raise SystemExit(f"demo: no leader elected within {timeout:.0f} s (see the replica logs)")


def run_demo(workdir: Path, phase: Phase | None = None) -> bool:
    """Run the demo in ``workdir`` (emptied first); True if every tick ran exactly once."""
    phase = phase or Phase()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    url = f"sqlite:///{workdir.resolve()}/baton.db"
    ledger = workdir / "ledger.jsonl"
    cluster = "demo"
    env = dict(os.environ, BATON_DEMO_LEDGER=str(ledger), PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path.cwd()), env.get("PYTHONPATH", "")) if p
    )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    _say(f"Starting 3 replicas on the embedded backend ({url}), lease_ttl {LEASE_TTL:g} s")
    for n in (1, 2, 3):
        name = f"replica-{n}"
        log = (workdir / f"{name}.log").open("wb")
        procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scheduler",
                "run",
                "--backend",
                url,
                "--cluster",
                cluster,
                "--replica-id",
                name,
                "--jobs",
                "jobs.examples",
                "--log-format",
                "json",
            ],
            env=dict(env, BATON_LEASE_TTL=str(LEASE_TTL)),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    backend = from_url(url, op_timeout=2.0)
    try:
        first = _wait_leader(backend, cluster, None, 30)
        _say(f"  {first.replica_id} leads (fencing token {first.token}); the others follow")
        time.sleep(phase.settle)

        victim = procs[first.replica_id]
        _say(f"kill -9 {first.replica_id} (pid {victim.pid}) while it leads")
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        second = _wait_leader(backend, cluster, first.token, LEASE_TTL * 3)
        _say(
            f"  {second.replica_id} leads after {time.monotonic() - killed_at:.2f} s "
            f"(token {second.token}); the lease had to expire first"
        )
        time.sleep(phase.after_crash)

        _say(f"SIGTERM {second.replica_id}: graceful handover")
        stopped_at = time.monotonic()
        procs[second.replica_id].send_signal(signal.SIGTERM)
        third = _wait_leader(backend, cluster, second.token, LEASE_TTL * 3)
        _say(
            f"  {third.replica_id} leads after {(time.monotonic() - stopped_at) * 1000:.0f} ms "
            f"(token {third.token})"
        )
        time.sleep(phase.after_handover)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        backend.close()
    return _report(ledger, workdir)


def _report(ledger: Path, workdir: Path) -> bool:
    runs = [json.loads(line) for line in ledger.read_text().splitlines() if line.strip()]
    if not runs:
        _say("VERDICT: FAIL - no tick ran at all (see the replica logs in " + str(workdir) + ")")
        return False
    counts = Counter(run["tick"] for run in runs)
    ticks = sorted(datetime.fromisoformat(t) for t in counts)
    expected = []
    tick = ticks[0]
    while tick <= ticks[-1]:
        expected.append(tick)
        tick += INTERVAL
    _say("")
    _say(f"{'TICK (UTC)':<12}{'REPLICA':<12}{'TOKEN':>6}  {'STARTED LATE BY':>16}")
    for run in sorted(runs, key=lambda r: (r["tick"], r["at"])):
        late = run["at"] - datetime.fromisoformat(run["tick"]).timestamp()
        note = "  (caught up after the failover)" if late > 0.5 else ""
        _say(
            f"{run['tick'][11:19]:<12}{run['replica']:<12}{run['token']:>6}  "
            f"{late * 1000:>13.0f} ms{note}"
        )
    duplicated = sorted(t for t, c in counts.items() if c > 1)
    missed = [t for t in expected if t.isoformat() not in counts]
    _say("")
    if duplicated or missed:
        _say(
            f"VERDICT: FAIL - {len(expected)} ticks, {len(duplicated)} ran twice "
            f"{duplicated}, {len(missed)} never ran {[t.isoformat() for t in missed]}"
        )
        return False
    _say(
        f"VERDICT: PASS - every one of the {len(expected)} ticks from {ticks[0]:%H:%M:%S} to "
        f"{ticks[-1]:%H:%M:%S} ran exactly once, across a kill -9 and a graceful handover."
    )
    _say(
        f"(logs, ledger and database in {workdir}; try: baton history {JOB} "
        f"--backend sqlite:///{workdir.resolve()}/baton.db --cluster demo)"
    )
    return True


def main() -> None:
    ok = run_demo(Path(os.environ.get("BATON_DEMO_DIR", "demo-run")))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
