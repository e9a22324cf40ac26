"""Outcomes that must not be lost: queued, stored in batches, kept until the backend takes them.

A run's end (``ok``/``error``/``lost``) is written once, by the replica that knows it. The
runner queues it (:meth:`Outcomes.queue`) and a small saver thread stores everything queued
with one :meth:`~scheduler.backends.base.RunLedger.finish_many` per :data:`CHUNK` records
(:meth:`Outcomes.flush`), once none has arrived for :data:`GATHER` seconds (at most
:data:`LONGEST_GATHER` after the first): the outcomes of a burst take a few round trips, not
one each, and are stored after its runs have started. When the backend does not answer, the
records stay queued, in order, and are stored at a later flush (every :data:`FLUSH_RETRY`
seconds, when more arrive, or when the maintenance loop flushes because the backend answers
again). Saving one twice is harmless (``finish`` overwrites the record of its own attempt
with the same value).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.backends.runs import RunRecord
from scheduler.errors import BackendError
from scheduler.leadership.view import Leadership

#: Seconds between attempts to store outcomes the backend could not take at the time.
FLUSH_RETRY = 1.0
#: Seconds the saver lets outcomes gather before it stores them, and again as long as more
#: keep arriving: the runs of a burst end together, and one batch is cheaper than several.
GATHER = 0.025
#: The most seconds the saver lets outcomes gather: with 10,000 jobs due at once the runs end
#: over about a second, and storing them while later fires still wait to start would compete
#: with those starts (issue 13). The longer, the more outcomes a killed leader leaves for the
#: next one to settle (it records them ``lost``).
LONGEST_GATHER = 1.0
#: The most outcomes stored in one call.
CHUNK = 1000


class Outcomes:
    """The outcomes of fires on their way to the run ledger.

    Args:
        backend: the run ledger.
        cluster: election name, the namespace of the history.
        leadership: told of a failure (a permanent one ends leadership).
        log: the runner's logger.
        wake: set when a store fails, to wake the maintenance loop (it retries once the
            backend answers).
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
        self._flushing = threading.Lock()  # one flush at a time keeps the records in order
        self._unsaved: list[RunRecord] = []
        self._failed = False  # the last store failed: retry after FLUSH_RETRY
        self._ready = threading.Event()  # something is queued: the saver wakes
        self._closed = False
        self._saver = threading.Thread(target=self._save_loop, name="baton-outcomes", daemon=True)

    def queue(self, runs: Iterable[RunRecord]) -> None:
        """Queue ``runs``; the saver stores them within :data:`GATHER` seconds (or keeps
        them until the backend takes them)."""
        with self._lock:
            self._unsaved.extend(runs)
            if self._saver.ident is None and not self._closed:
                self._saver.start()
        if not self._ready.is_set():  # set() takes a lock: every pool worker calls this
            self._ready.set()

    def close(self) -> None:
        """Stop the saver (after one last :meth:`flush`, which the caller makes)."""
        with self._lock:
            self._closed = True
        self._ready.set()

    @property
    def saver(self) -> threading.Thread:
        """The saver thread (started by the first :meth:`queue`)."""
        return self._saver

    def _save_loop(self) -> None:
        while True:
            self._ready.wait(FLUSH_RETRY if self._failed else None)
            self._ready.clear()
            if self._closed:
                return
            self._gather()
            try:
                self.flush()
            except Exception:  # a bug must not end the saver: the records stay queued
                self._log.exception("history_write_failed")

    def _gather(self) -> None:
        """Wait :data:`GATHER` seconds, and again while outcomes keep arriving, at most
        :data:`LONGEST_GATHER` in all (the runs of a burst end together: stored together)."""
        deadline = time.monotonic() + LONGEST_GATHER
        with self._lock:
            seen = len(self._unsaved)
        while not self._closed:
            time.sleep(max(0.0, min(GATHER, deadline - time.monotonic())))
            with self._lock:
                count = len(self._unsaved)
            if count == seen or time.monotonic() >= deadline:
                return
            seen = count

    def retry(self) -> None:
        """Store now what a failed store left (the backend may answer again); outcomes on
        their way normally are the saver's alone."""
        if self._failed:
            self.flush()

    def save(self, runs: Iterable[RunRecord]) -> None:
        """Store ``runs`` now, after whatever is queued; what the backend does not take stays
        queued for a later :meth:`flush`."""
        self.queue(runs)
        self.flush()

    def flush(self) -> bool:
        """Store the queued records, oldest first, :data:`CHUNK` per call; stop at the first
        failure (logged as ``history_write_deferred``; the rest stays queued, in order).

        Returns:
            Whether everything queued was stored.
        """
        with self._flushing:
            while True:
                with self._lock:
                    chunk = self._unsaved[:CHUNK]
                if not chunk:
                    self._failed = False
                    return True
                try:
                    self._backend.finish_many(self._cluster, chunk)
                except BackendError as exc:
                    if not self._failed:  # once per outage, not once per retry
                        self._log.warning(
                            "history_write_deferred", runs=len(self._unsaved), error=str(exc)
                        )
                    self._failed = True
                    self._leadership.report(exc)
                    self._wake.set()
                    return False
                with self._lock:
                    del self._unsaved[: len(chunk)]

    def pending(self) -> bool:
        """True while some record is queued, not stored."""
        with self._lock:
            return bool(self._unsaved)
