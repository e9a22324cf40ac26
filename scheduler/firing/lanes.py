"""Lanes: one serial queue of fires per job, so a job never overlaps itself on a replica.

A fire arriving while the job runs waits its turn (coalesced to the newest one unless
``catch_up="all"``; a claim already made is never coalesced away). A lane drains on a
worker of the runner's job pool and goes idle when its queue is empty.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import UTC, datetime
from typing import Any

from scheduler.firing.runs import RunRecord
from scheduler.jobs.context import JobContext
from scheduler.jobs.spec import JobSpec


class Lane:
    """The serial queue of fires for one job on this replica.

    Args:
        spec: the job.
        pool: where the lane drains (one worker at a time per lane).
        run: runs one fire to its end (``run(lane, fire)``); whatever it raises is logged
            as ``fire_failed`` and the lane goes on.
        accepting: whether fires may still start (false once the replica stops firing:
            the lane then drops what it holds and goes idle).
        log: the runner's logger.
    """

    def __init__(
        self,
        spec: JobSpec,
        pool: Executor,
        run: Callable[[Lane, datetime], None],
        accepting: Callable[[], bool],
        log: Any,
    ) -> None:
        self.spec = spec
        self._pool = pool
        self._run = run
        self._accepting = accepting
        self._log = log
        self._lock = threading.Lock()
        self._pending: list[datetime] = []
        self._kept: set[datetime] = set()  # claims already made: never coalesced away
        self._busy = False
        #: Set while no fire is queued or running.
        self.idle = threading.Event()
        self.idle.set()
        #: The run in progress and its context (``None`` between runs).
        self.active: RunRecord | None = None
        self.active_ctx: JobContext | None = None

    @property
    def pending(self) -> list[datetime]:
        """The fires waiting their turn, oldest first (a copy)."""
        with self._lock:
            return list(self._pending)

    def submit(self, fires: Sequence[datetime], keep: bool = False) -> None:
        """Queue ``fires`` (deduplicated, in order); start draining if idle.

        ``keep``: the fires are claims already made (see :mod:`scheduler.firing.recovery`),
        run even where the job's policy coalesces a backlog to its newest fire.
        """
        with self._lock:
            incoming = {f.astimezone(UTC) for f in fires}
            if keep:
                self._kept |= incoming
            merged = sorted(set(self._pending) | incoming)
            if self.spec.catch_up != "all":
                merged = sorted({*merged[-1:], *(f for f in merged if f in self._kept)})
            self._pending = merged
            if self._busy or not merged:
                return
            self._busy = True
            self.idle.clear()
        try:
            self._pool.submit(self._drain)
        except RuntimeError:  # the pool is shut down (replica closing): nobody will drain
            with self._lock:
                self._go_idle()

    def drop_pending(self) -> None:
        """Forget the queued fires (a running one goes on)."""
        with self._lock:
            self._pending = []
            self._kept.clear()

    def _go_idle(self) -> None:
        """Forget queued fires and mark the lane idle (with ``_lock`` held)."""
        self._pending = []
        self._kept.clear()
        self._busy = False
        self.idle.set()

    def _drain(self) -> None:
        # The lane outlives any one fire: nothing a fire raises (a job's sys.exit() is
        # recorded by the runner; anything else is a bug, logged here) reaches the pool's
        # worker, and the lane never stays busy with nobody draining it.
        idle = False
        try:
            while True:
                with self._lock:  # idle in the same step as the check: no fire slips by
                    if not self._pending or not self._accepting():
                        self._go_idle()
                        idle = True
                        return
                    fire = self._pending.pop(0)
                    self._kept.discard(fire)
                try:
                    self._run(self, fire)
                except BaseException:
                    self._log.exception("fire_failed", job=self.spec.name)
        finally:
            if not idle:  # the lane's own bookkeeping raised: free it all the same
                with self._lock:
                    self._go_idle()
