"""Outcomes that must not be lost: a record the backend could not take is kept and stored later.

A run's end (``ok``/``error``/``lost``) is written once, by the replica that knows it. When
the backend does not answer, the record stays in memory, in order, and the maintenance loop
stores it once the backend answers again (:meth:`Outcomes.flush`, every
:data:`FLUSH_RETRY` seconds or when woken). Records are taken in batches so that a backend
able to store many in one round trip can do so; each is stored by itself for now.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.errors import BackendError
from scheduler.firing.runs import RunRecord
from scheduler.leadership.view import Leadership

#: Seconds between attempts to store outcomes the backend could not take at the time.
FLUSH_RETRY = 1.0


class Outcomes:
    """The outcomes of fires on their way to the run ledger.

    Args:
        backend: the run ledger.
        cluster: election name, the namespace of the history.
        leadership: told of a failure (a permanent one ends leadership).
        log: the runner's logger.
        wake: set when a record is kept for later, to wake the maintenance loop.
    """

    def __init__(
        self,
        backend: LeaseBackend,
        cluster: str,
        leadership: Leadership,
        log: Any,
        wake: threading.Event,
    ) -> None:
        self._backend = backend
        self._cluster = cluster
        self._leadership = leadership
        self._log = log
        self._wake = wake
        self._lock = threading.Lock()
        self._unsaved: list[RunRecord] = []

    def save(self, runs: Iterable[RunRecord]) -> None:
        """Store ``runs`` now; any the backend does not take are kept for :meth:`flush`
        (logged as ``history_write_deferred``)."""
        for run in runs:
            try:
                self._backend.finish(self._cluster, run)
            except BackendError as exc:
                self._log.warning("history_write_deferred", job=run.job, error=str(exc))
                self._leadership.report(exc)
                with self._lock:
                    self._unsaved.append(run)
                self._wake.set()

    def flush(self) -> None:
        """Store the kept records, oldest first; stop at the first failure (kept, in order)."""
        with self._lock:
            pending, self._unsaved = self._unsaved, []
        for index, run in enumerate(pending):
            try:
                self._backend.finish(self._cluster, run)
            except BackendError:
                with self._lock:
                    self._unsaved[:0] = pending[index:]
                return

    def pending(self) -> bool:
        """True while some record is kept, not stored."""
        with self._lock:
            return bool(self._unsaved)
