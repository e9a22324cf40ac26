"""Reference contender on ZooKeeper: kazoo's own ``Election`` recipe, as its docs show it.

``python -m benchmarks.kazoo_election_ref --hosts HOST:PORT --path /election --timeout 2
--name NAME --events FILE``

``Election.run(func)`` blocks until this contender wins, then calls ``func``, which leads
until SIGTERM; returning from it deletes the contender's node (graceful stop), and the
next contender, watching its predecessor, wins. A contender still waiting is cancelled.
Events go to ``--events`` as JSON lines ``{"event": ..., "t": unix seconds, "node": ...}``.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

from kazoo.client import KazooClient

from benchmarks.refproc import EventLog, parse_args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        [
            ("--hosts", {"required": True}),
            ("--path", {"required": True, "help": "the election node"}),
            ("--timeout", {"type": float, "required": True, "help": "session timeout, s"}),
            ("--name", {"required": True, "help": "this contender's identifier"}),
        ],
    )

    events = EventLog(args.events)

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
        events.emit("acquired", node=election.lock.node)
        stop.wait()

    signal.signal(signal.SIGTERM, on_term)
    events.emit("started")
    try:
        election.run(lead)  # returns once lead() returned and the node is deleted
        events.emit("released")
    finally:
        client.stop()
        client.close()
        events.close()


if __name__ == "__main__":
    main()
