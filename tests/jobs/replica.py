"""Jobs run by the replica processes of the scenario tests, configured by environment.

BATON_TEST_SINK   path of the fenced sink (tests.harness.sink)
BATON_TEST_EVERY  interval of test.tick (default 2s)
BATON_TEST_WORK   seconds test.tick works between its start and end writes, ignoring
                  ctx.lost meanwhile as a naive job would (default 0)
"""

from __future__ import annotations

import os
import time

from scheduler import JobContext, LeadershipLost, singleton_job
from tests.harness.sink import env_sink as sink


@singleton_job(every=os.environ.get("BATON_TEST_EVERY", "2s"), name="test.tick", catch_up="all")
def tick(ctx: JobContext) -> None:
    """Start write, optional work that ignores ctx, a check, and the fenced end write."""
    common = {
        "job": ctx.job,
        "tick": ctx.scheduled_time.isoformat(),
        "replica": ctx.replica_id,
        "pid": os.getpid(),
    }
    sink().write("ledger", ctx.fencing_token, phase="start", **common)
    work = float(os.environ.get("BATON_TEST_WORK", "0"))
    end = time.monotonic() + work
    while time.monotonic() < end:
        time.sleep(0.01)
    try:
        ctx.check()
        verdict = "valid"
    except LeadershipLost:
        verdict = "check-raised"
    sink().write("ledger", ctx.fencing_token, phase="end", note=verdict, **common)
