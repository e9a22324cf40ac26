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
import json
import signal
import time
import warnings
from types import FrameType
from typing import Any

from tooz import coordination


class Terminated(Exception):
    """SIGTERM arrived."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="postgresql://user:pass@host:port/db")
    parser.add_argument("--name", required=True, help="the lock name")
    parser.add_argument("--member", required=True, help="this contender's member id")
    parser.add_argument("--events", required=True, help="JSON-lines event file")
    args = parser.parse_args(argv)

    events = open(args.events, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def emit(event: str, **fields: Any) -> None:
        events.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
        events.flush()

    signal.signal(signal.SIGTERM, _on_term)
    # tooz 9 warns that its PostgreSQL driver is deprecated; it still is the driver it ships.
    warnings.simplefilter("ignore", DeprecationWarning)
    coordinator = coordination.get_coordinator(args.url, args.member.encode())
    coordinator.start(start_heart=True)
    lock = coordinator.get_lock(args.name.encode())
    emit("started")
    try:
        lock.acquire(blocking=True)
        emit("acquired", pid=lock._conn.get_backend_pid())  # instrumentation only
        while True:
            time.sleep(3600)  # leads until SIGTERM
    except Terminated:
        pass
    finally:
        if lock.acquired:
            lock.release()
            emit("released")
        coordinator.stop()
        events.close()


if __name__ == "__main__":
    main()
