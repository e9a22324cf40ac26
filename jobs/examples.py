"""Two example jobs: a heartbeat every 2 seconds and a nightly report.

The heartbeat appends one line per run to a ledger file that is *not* the coordination
backend, so ``make demo`` can check independently that every tick ran exactly once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from scheduler import JobContext, singleton_job

LEDGER_ENV = "BATON_DEMO_LEDGER"


# catch_up="all": ticks that fall due during a failover are each run once by the new leader.
@singleton_job(every="2s", name="examples.heartbeat", catch_up="all")
def heartbeat(ctx: JobContext) -> None:
    """Record that this tick ran, on which replica, under which fencing token."""
    ctx.check()  # cheap: raises LeadershipLost if this replica may no longer lead
    line = json.dumps(
        {
            "job": ctx.job,
            "tick": ctx.scheduled_time.isoformat(),
            "replica": ctx.replica_id,
            "token": ctx.fencing_token,
            "pid": os.getpid(),
            "at": time.time(),
        }
    )
    ledger = Path(os.environ.get(LEDGER_ENV, ".baton/ledger.jsonl"))
    ledger.parent.mkdir(parents=True, exist_ok=True)
    # One short O_APPEND write per run: atomic on a local file system, so lines never mix.
    fd = os.open(ledger, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@singleton_job(cron="0 3 * * *", timezone="Europe/Berlin", name="examples.nightly_report")
def nightly_report(ctx: JobContext) -> None:
    """Runs at 03:00 Berlin time on one replica (a placeholder for real work)."""
    ctx.check()
