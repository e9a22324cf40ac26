"""Reference contender on etcd: OpenStack tooz's lock with its ``etcd3gw`` driver.

``python -m benchmarks.tooz_etcd_lock_ref --url etcd3+http://host:port?lock_timeout=2
--name NAME --member ID --events FILE``

``coordination.get_coordinator(url, member).start(start_heart=True)``, then
``coordinator.get_lock(name).acquire(blocking=True)``: each attempt grants an etcd lease of
``lock_timeout`` seconds and creates ``/tooz/locks/<name>`` under it if absent (a txn on
``CreateRevision == 0``); a failed attempt is retried with tenacity's exponential wait
(capped at 1 s), not woken by a watch. The heartbeat thread keeps the lease alive. The
holder leads until SIGTERM, then ``release()`` (a txn deleting the key if its value is its
own) and exits. Events go to ``--events`` as JSON lines ``{"event": ..., "t": unix seconds,
"value": the lock key's value, base64}``, which the benchmark matches with the key it reads.
"""

from __future__ import annotations

from benchmarks.refproc import parse_args
from benchmarks.tooz_lock_ref import hold


def main(argv: list[str] | None = None) -> None:
    args = parse_args(
        __doc__,
        argv,
        [
            ("--url", {"required": True, "help": "etcd3+http://host:port?lock_timeout=2"}),
            ("--name", {"required": True, "help": "the lock name"}),
            ("--member", {"required": True, "help": "this contender's member id"}),
        ],
    )

    # Instrumentation only: the lock key's value (its Etcd3Lock's uuid).
    hold(args, lambda lock: {"value": lock._uuid})


if __name__ == "__main__":
    main()
