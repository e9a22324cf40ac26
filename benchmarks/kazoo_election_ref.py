"""Reference contender on ZooKeeper: kazoo's own ``Election`` recipe, as its docs show it.

``python -m benchmarks.kazoo_election_ref --hosts HOST:PORT --path /election --timeout 2
--name NAME --events FILE``

``Election.run(func)`` blocks until this contender wins, then calls ``func``, which leads
until SIGTERM; returning from it deletes the contender's node (graceful stop), and the
next contender, watching its predecessor, wins. A contender still waiting is cancelled.
Events go to ``--events`` as JSON lines ``{"event": ..., "t": unix seconds, "node": ...}``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from types import FrameType
from typing import Any

from kazoo.client import KazooClient


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hosts", required=True)
    parser.add_argument("--path", required=True, help="the election node")
    parser.add_argument("--timeout", type=float, required=True, help="session timeout, s")
    parser.add_argument("--name", required=True, help="this contender's identifier")
    parser.add_argument("--events", required=True, help="JSON-lines event file")
    args = parser.parse_args(argv)

    events = open(args.events, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run

    def emit(event: str, **fields: Any) -> None:
        events.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
        events.flush()

    client = KazooClient(hosts=args.hosts, timeout=args.timeout)
    client.start(timeout=10)
    election = client.Election(args.path, args.name)
    stop = threading.Event()
    leading = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()
        if not leading.is_set():
            election.cancel()

    def lead() -> None:
        leading.set()
        emit("acquired", node=election.lock.node)
        stop.wait()

    signal.signal(signal.SIGTERM, on_term)
    emit("started")
    try:
        election.run(lead)  # returns once lead() returned and the node is deleted
        emit("released")
    finally:
        client.stop()
        client.close()
        events.close()


if __name__ == "__main__":
    main()
