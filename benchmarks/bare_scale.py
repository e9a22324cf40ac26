"""Reference for the scale benchmark: bare APScheduler 3 with N interval jobs, one process.

``python -m benchmarks.bare_scale --jobs 1000 --every 10 --offset 5 --out FILE``

A ``BackgroundScheduler`` (APScheduler's default ``ThreadPoolExecutor(10)``, with Baton's
``misfire_grace`` of 60 s and coalescing, as Baton's jobs have) runs ``jobs`` interval jobs
whose instants are ``k * every + offset`` since the Unix epoch, so all of them fall due at
the same instant. APScheduler does not hand the scheduled time to the job; the job takes
``time.time()`` first thing and the scheduled instant is the latest grid point at or before
it (exact while lateness stays below ``every``). Each run appends ``job,scheduled,started``
to ``out`` under a lock, as Baton's ``benchmarks.scale_jobs`` does. Prints one JSON line
``{"event": "started", "first": ...}`` once every job is scheduled (``first``: the first
instant at which all of them fire); runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
import time
from datetime import UTC, datetime
from types import FrameType

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

#: Seconds a fire may start late before APScheduler skips it: Baton's default misfire_grace.
MISFIRE_GRACE = 60


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, required=True, help="how many jobs")
    parser.add_argument("--every", type=float, required=True, help="interval, seconds")
    parser.add_argument("--offset", type=float, default=0.0, help="phase after the epoch grid")
    parser.add_argument("--out", required=True, help="file to append one line per run")
    args = parser.parse_args(argv)

    every, offset = args.every, args.offset
    # A grid point in the past: APScheduler fires at the grid points after it starts.
    start = math.floor((time.time() - offset) / every) * every + offset
    out = open(args.out, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - kept open
    lock = threading.Lock()

    def job(name: str) -> None:
        started = time.time()
        scheduled = start + math.floor((started - start) / every + 1e-9) * every
        line = f"{name},{scheduled:.3f},{started:.6f}\n"
        with lock:
            out.write(line)

    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    scheduler = BackgroundScheduler(
        timezone=UTC,
        job_defaults={"misfire_grace_time": MISFIRE_GRACE, "coalesce": True, "max_instances": 1},
    )
    trigger = IntervalTrigger(seconds=every, start_date=datetime.fromtimestamp(start, UTC))
    for index in range(args.jobs):
        name = f"bare.j{index:05d}"
        scheduler.add_job(job, trigger, args=[name], id=name)
    scheduler.start()
    # The first instant for which every job is surely scheduled.
    first = start + (math.floor((time.time() - start) / every) + 1) * every
    print(json.dumps({"event": "started", "jobs": args.jobs, "first": first}), flush=True)
    stop.wait()
    scheduler.shutdown(wait=True)
    out.close()


if __name__ == "__main__":
    main()
