"""The job Baton replicas run in the benchmarks: records how late each run started.

Configured by environment, read when the replica loads its jobs:

BATON_BENCH_EVERY  interval of ``bench.tick`` (default ``1h``: no fire during a failover run)
BATON_BENCH_OUT    file to append one JSON line per run to (unset: the job does nothing)
"""

from __future__ import annotations

import json
import os
import time

from scheduler import JobContext, singleton_job


@singleton_job(every=os.environ.get("BATON_BENCH_EVERY", "1h"), name="bench.tick", catch_up="none")
def tick(ctx: JobContext) -> None:
    """Note the moment the job function starts, relative to its scheduled fire instant."""
    started = time.time()
    out = os.environ.get("BATON_BENCH_OUT")
    if not out:
        return
    record = {
        "scheduled": ctx.scheduled_time.timestamp(),
        "lateness": started - ctx.scheduled_time.timestamp(),
        "replica": ctx.replica_id,
        "token": ctx.fencing_token,
    }
    with open(out, "a", encoding="utf-8") as sink:
        sink.write(json.dumps(record) + "\n")
