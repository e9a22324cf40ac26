"""The Go reference on etcd: ``etcdctl elect`` (``client/v3/concurrency``'s Election).

``python -m benchmarks.etcdctl_elect_ref --endpoints host:port --name NAME --proposal ID
--events FILE``

Runs ``etcdctl elect NAME ID``: a session (an etcd lease of 60 s, etcdctl's fixed session
TTL, kept alive every 20 s), a key ``NAME/<lease id>`` created under it, and a wait for every
key created before it to be deleted (a watch on its predecessor), then it prints the
leader's key and proposal and holds the leadership. This wrapper timestamps that output
(``{"event": "acquired", "t": ..., "key": ...}``) and turns SIGTERM into the SIGINT on which
etcdctl resigns and closes its session (on SIGTERM itself etcdctl just dies, leaving its key
for the TTL). etcdctl gets SIGKILL as soon as this wrapper dies (``PR_SET_PDEATHSIG``), so a
kill -9 of the wrapper is a kill -9 of etcdctl.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from types import FrameType

from benchmarks.refproc import EventLog, parse_args

ETCDCTL = "/usr/bin/etcdctl"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        [
            ("--endpoints", {"required": True, "help": "host:port[,host:port...]"}),
            ("--name", {"required": True, "help": "the election name"}),
            ("--proposal", {"required": True, "help": "this contender's proposal"}),
        ],
    )

    events = EventLog(args.events)

    child = subprocess.Popen(
        [ETCDCTL, "--endpoints", args.endpoints, "elect", args.name, args.proposal],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "ETCDCTL_API": "3"},
        preexec_fn=_die_with_parent,  # the wrapper is single-threaded: preexec_fn is safe
    )

    def on_term(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signal.SIGINT)  # etcdctl resigns on SIGINT

    signal.signal(signal.SIGTERM, on_term)
    events.emit("started")
    assert child.stdout is not None
    lines = iter(child.stdout.readline, b"")
    key = next(lines, b"").decode().strip()
    if key:
        events.emit("acquired", key=key)
    for _ in lines:
        pass  # the proposal line; then nothing until etcdctl exits
    child.wait()
    events.emit("released")
    events.close()


if __name__ == "__main__":
    main()
