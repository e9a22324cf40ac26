"""Recipe: Baton in a plain worker process (a queue consumer, a daemon of your own).

    BATON_CONFIG=baton.yaml python plain_worker.py

The worker's own work runs in its threads; the main thread waits for SIGTERM or SIGINT,
then Baton hands over (no new fire, running jobs get ``shutdown_grace``, the lease is
released) and the process exits 0. A second signal exits at once (status 130).
"""

from __future__ import annotations

import threading

from scheduler import BatonReplica


def consume(stop: threading.Event) -> None:
    """Stand-in for the worker's own loop (polling a queue, ...)."""
    while not stop.wait(1.0):
        pass


def main() -> None:
    stop = threading.Event()
    worker = threading.Thread(target=consume, args=(stop,), name="consumer")
    worker.start()
    try:
        BatonReplica().run_until_signal()  # blocks until SIGTERM/SIGINT, then hands over
    finally:
        stop.set()
        worker.join()


if __name__ == "__main__":
    main()
