"""Reference contender: leader election by hand with redis-py's ``Lock``.

``python -m benchmarks.redis_lock_ref --url URL --name KEY --ttl 2 --events FILE``

The way a user would write it: ``acquire(blocking=True)`` (redis-py retries every
``Lock.sleep`` seconds, 0.1 by default), then ``reacquire()`` every ``ttl / 3`` while leading;
on SIGTERM ``release()`` and exit. With ``--job-every`` an APScheduler interval job runs in
every process and does its (empty) work only while this process holds the lock, so the idle
figures compare like with like. Events go to ``--events`` as JSON lines
``{"event": ..., "t": unix seconds, "token": lock token}``.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC

import redis
from redis.exceptions import LockError

from benchmarks.refproc import EventLog, Terminated, parse_args, raise_terminated


def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        [
            ("--url", {"required": True}),
            ("--name", {"required": True, "help": "the lock key"}),
            ("--ttl", {"type": float, "required": True, "help": "lock timeout, seconds"}),
            ("--job-every", {"type": float, "default": 0.0, "help": "run an APScheduler job"}),
        ],
    )

    events = EventLog(args.events)

    signal.signal(signal.SIGTERM, raise_terminated)
    client = redis.Redis.from_url(args.url)
    lock = client.lock(args.name, timeout=args.ttl)  # default sleep: 0.1 s between tries
    leading = threading.Event()
    scheduler = None
    if args.job_every:
        from apscheduler.schedulers.background import BackgroundScheduler

        def job() -> None:
            if leading.is_set():
                pass  # the job's work would go here

        scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.add_job(job, "interval", seconds=args.job_every)
        scheduler.start()
    events.emit("started", sleep=lock.sleep)
    try:
        while True:
            lock.acquire(blocking=True)
            token = lock.local.token
            leading.set()
            events.emit("acquired", token=token.decode() if token else None)
            try:
                while True:
                    time.sleep(args.ttl / 3)
                    lock.reacquire()
            except LockError as exc:  # expired or taken over: back to waiting
                leading.clear()
                events.emit("lost", error=str(exc))
    except Terminated:
        pass
    finally:
        leading.clear()
        if lock.local.token is not None:
            try:
                lock.release()
                events.emit("released")
            except LockError:
                pass
        if scheduler is not None:
            scheduler.shutdown(wait=False)
        events.close()


if __name__ == "__main__":
    main()
