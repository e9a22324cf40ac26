"""Reference for fire lateness: bare APScheduler 3, one interval job, in its own process.

``python -m benchmarks.bare_apscheduler --every 0.5 --offset 0.25 --out FILE``

A ``BackgroundScheduler`` (default thread-pool executor) runs an interval job whose first
fire is aligned to the Unix epoch plus ``offset``, so its scheduled instants are
``start + k * every``. APScheduler does not hand the scheduled time to the job; the job takes
``time.time()`` first thing and the scheduled instant is the latest ``start + k * every`` at
or before it (APScheduler never starts a job early, and lateness stays far below ``every``).
Runs until SIGTERM.
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--every", type=float, required=True, help="interval, seconds")
    parser.add_argument("--offset", type=float, default=0.0, help="phase after the epoch grid")
    parser.add_argument("--out", required=True, help="file to append one JSON line per run")
    args = parser.parse_args(argv)

    every = args.every
    now = time.time()
    start = (math.floor(now / every) + 2) * every + args.offset
    out = open(args.out, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def job() -> None:
        started = time.time()
        k = math.floor((started - start) / every + 1e-9)
        scheduled = start + k * every
        out.write(json.dumps({"scheduled": scheduled, "lateness": started - scheduled}) + "\n")
        out.flush()

    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    scheduler = BackgroundScheduler(timezone=UTC)
    scheduler.add_job(
        job,
        IntervalTrigger(seconds=every, start_date=datetime.fromtimestamp(start, UTC)),
        id="bare",
    )
    scheduler.start()
    stop.wait()
    scheduler.shutdown(wait=True)
    out.close()


if __name__ == "__main__":
    main()
