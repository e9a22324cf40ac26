"""Recipe: Baton in any gunicorn application, through gunicorn's server hooks.

    BATON_CONFIG=baton.yaml gunicorn -c gunicorn_hooks.py --workers 4 wsgi_app:app

``post_fork`` starts one replica in each worker process, after the fork (a replica started
in the arbiter before the fork would not survive it: do not start one at import time with
``--preload``); ``worker_exit`` hands over when gunicorn stops the worker (SIGTERM to the
arbiter, a HUP reload, ``max_requests``). The workers elect one leader among themselves
and with every other host's workers: each tick fires once.
"""

from __future__ import annotations

from typing import Any

from scheduler import BatonReplica
from scheduler.ops.embed import current

# Running jobs get shutdown_grace (30 s by default) on stop: let gunicorn wait longer than
# that before it kills a worker (its default graceful_timeout is 30 s).
graceful_timeout = 45


def post_fork(server: Any, worker: Any) -> None:
    BatonReplica().start()


def worker_exit(server: Any, worker: Any) -> None:
    replica = current()
    if replica is not None:
        replica.stop()
