"""Reference contender on PostgreSQL: OpenStack tooz's lock, as its docs show it.

``python -m benchmarks.tooz_lock_ref --url postgresql://user:pass@host:port/db --name NAME
--member ID --events FILE``

``coordination.get_coordinator(url, member).start(start_heart=True)``, then
``coordinator.get_lock(name).acquire(blocking=True)`` (what ``with lock:`` does): tooz's
PostgreSQL driver opens a connection for the lock and runs ``SELECT pg_advisory_lock(k1, k2)``
on it, which waits in the server's lock queue until the holder's session lets go. The
holder leads until SIGTERM, then ``release()`` (``pg_advisory_unlock``, then the lock's
connection is closed) and exits. Events go to ``--events`` as JSON lines
``{"event": ..., "t": unix seconds, "pid": backend pid of the lock's connection}``; the pid
(a local libpq call, no round trip) lets the benchmark match ``pg_locks`` to a process.
"""

from __future__ import annotations

import argparse
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any

from tooz import coordination

from benchmarks.refproc import EventLog, Terminated, parse_args, raise_terminated


def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        [
            ("--url", {"required": True, "help": "postgresql://user:pass@host:port/db"}),
            ("--name", {"required": True, "help": "the lock name"}),
            ("--member", {"required": True, "help": "this contender's member id"}),
        ],
    )

    # tooz 9 warns that its PostgreSQL driver is deprecated; it still is the driver it ships.
    warnings.simplefilter("ignore", DeprecationWarning)
    hold(args, lambda lock: {"pid": lock._conn.get_backend_pid()})  # instrumentation only


def hold(args: argparse.Namespace, holder: Callable[[Any], dict[str, Any]]) -> None:
    """Take tooz's lock ``args.name`` at ``args.url`` as ``args.member``, lead until SIGTERM,
    release; ``holder(lock)`` gives the ``acquired`` event's fields naming the holder."""
    events = EventLog(args.events)
    signal.signal(signal.SIGTERM, raise_terminated)
    coordinator = coordination.get_coordinator(args.url, args.member.encode())
    coordinator.start(start_heart=True)
    lock: Any = coordinator.get_lock(args.name.encode())
    events.emit("started")
    try:
        lock.acquire(blocking=True)
        events.emit("acquired", **holder(lock))
        while True:
            time.sleep(3600)  # leads until SIGTERM
    except Terminated:
        pass
    finally:
        if lock.acquired:
            lock.release()
            events.emit("released")
        coordinator.stop()
        events.close()


if __name__ == "__main__":
    main()
