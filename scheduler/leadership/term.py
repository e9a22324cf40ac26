"""One leadership term: the lease it holds, renewed in place, and how long it may lead."""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable

from scheduler.clock import Clock
from scheduler.leadership.lease import Lease
from scheduler.leadership.timings import LeaseTimings


class Term:
    """One leadership term: a lease, renewed in place, and a ``lost`` event set once at its end.

    A term begins with each successful acquire and ends exactly once, with its reason.
    Whether it is still valid is computed from the monotonic clock at the moment of asking,
    so a stalled process never trusts a lease whose deadline passed while it was not looking.

    Args:
        lease: the lease as acquired.
        timings: for the renew deadline.
        clock: monotonic time source.
    """

    def __init__(self, lease: Lease, timings: LeaseTimings, clock: Clock) -> None:
        self._lease = lease
        self._timings = timings
        self._clock = clock
        self._lock = threading.Lock()
        self.lost = threading.Event()
        self.token = lease.token
        self.reason = ""
        # Called once when the term ends (async jobs: cancel the task, wake ctx.wait_lost).
        self._on_end: list[Callable[[], None]] = []

    @property
    def lease(self) -> Lease:
        with self._lock:
            return self._lease

    def renewed(self, lease: Lease) -> None:
        with self._lock:
            self._lease = lease

    def lease_deadline(self) -> float:
        """Local monotonic deadline of the lease; ``-inf`` once the term has ended."""
        if self.lost.is_set():
            return -math.inf
        return self.lease.deadline

    def leads_until(self) -> float:
        """Monotonic instant the term ends unless renewed: the renew deadline, capped by the
        lease deadline."""
        lease = self.lease
        return min(lease.deadline, lease.sent_at + self._timings.renew_deadline)

    def valid(self) -> bool:
        """True while the term has not ended and its renew deadline has not passed."""
        return not self.lost.is_set() and self._clock.monotonic() < self.leads_until()

    def on_end(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` once when the term ends (at once if it has already ended).

        It runs on the thread that ends the term (the elector's, or a claim's), after
        :attr:`lost` is set, so it must not block; an exception from it is swallowed.

        Returns:
            A function that removes ``callback`` (harmless once it has run).
        """
        with self._lock:
            if not self.lost.is_set():
                self._on_end.append(callback)
                return lambda: self._forget(callback)
        _call(callback)
        return lambda: None

    def _forget(self, callback: Callable[[], None]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._on_end.remove(callback)

    def end(self, reason: str) -> bool:
        """End the term; returns False if it had already ended."""
        with self._lock:
            if self.lost.is_set():
                return False
            self.reason = reason
            self.lost.set()
            callbacks, self._on_end = self._on_end, []
        for callback in callbacks:
            _call(callback)
        return True


def _call(callback: Callable[[], None]) -> None:
    """Run an end-of-term callback; one that fails never stops the term from ending."""
    with contextlib.suppress(Exception):
        callback()
