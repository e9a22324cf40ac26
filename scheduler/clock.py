"""Clocks: the lease logic reads time, and waits, only through :class:`Clock`.

Lease deadlines use :meth:`Clock.monotonic` only; the wall clock (:meth:`Clock.now`) is read
solely to name fire instants and to stamp history records, never to decide who leads. The
election loop waits only through :meth:`Clock.sleep` and :meth:`Clock.wait`, so a test can
drive it on a :class:`FakeClock`: moving that clock forward wakes whoever waits on it.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

#: Real seconds between the checks a :class:`FakeClock` waiter makes of its event (another
#: thread setting a ``threading.Event`` cannot notify the fake clock).
FAKE_EVENT_POLL = 0.002


class Clock(Protocol):
    """Source of time for the elector, the runner and the backends."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (arbitrary origin)."""
        ...

    def now(self) -> datetime:
        """The current wall-clock time as an aware UTC datetime."""
        ...

    def sleep(self, seconds: float) -> None:
        """Block for ``seconds`` (monotonic); return at once if ``seconds <= 0``."""
        ...

    def wait(self, event: threading.Event, timeout: float) -> bool:
        """Block until ``event`` is set or ``timeout`` seconds (monotonic) have passed.

        Returns:
            True if ``event`` is set (as :meth:`threading.Event.wait`).
        """
        ...


class SystemClock:
    """The real clocks: ``time.monotonic`` and ``datetime.now(UTC)``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        return event.wait(max(0.0, timeout))


class FakeClock:
    """A clock that moves only when told to; for unit tests of timing logic.

    :meth:`sleep` and :meth:`wait` block (in real time) until :meth:`advance` moves the clock
    to their deadline; :meth:`wait` also returns once its event is set. :attr:`sleepers`
    says how many threads wait for a deadline still ahead, so a test can move the clock and
    then wait until every woken thread has done its work and waits again.

    Args:
        start: the initial monotonic reading, in seconds.
        wall: the initial wall-clock time (aware); defaults to 2026-01-01T00:00:00Z.
    """

    def __init__(self, start: float = 1000.0, wall: datetime | None = None) -> None:
        self._mono = start
        self._wall = wall or datetime(2026, 1, 1, tzinfo=UTC)
        self._moved = threading.Condition()
        # Deadlines of the waiters not yet due, by a key of their own.
        self._waiting: dict[object, float] = {}

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._wall

    @property
    def sleepers(self) -> int:
        """How many threads wait in :meth:`sleep` or :meth:`wait` for a deadline ahead."""
        with self._moved:
            return len(self._waiting)

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` and wake the waiters that fall due."""
        with self._moved:
            self._mono += seconds
            self._wall += timedelta(seconds=seconds)
            # Due waiters stop counting as sleepers now, before they even wake: a test that
            # waits for ``sleepers`` to come back waits for them to have acted.
            for key, deadline in list(self._waiting.items()):
                if deadline <= self._mono:
                    del self._waiting[key]
            self._moved.notify_all()

    def sleep(self, seconds: float) -> None:
        self._block(None, seconds)

    def wait(self, event: threading.Event, timeout: float) -> bool:
        self._block(event, timeout)
        return event.is_set()

    def _block(self, event: threading.Event | None, seconds: float) -> None:
        key = object()
        with self._moved:
            deadline = self._mono + seconds
            if deadline <= self._mono:
                return
            self._waiting[key] = deadline
            try:
                while self._mono < deadline and not (event is not None and event.is_set()):
                    self._moved.wait(FAKE_EVENT_POLL if event is not None else None)
            finally:
                self._waiting.pop(key, None)


SYSTEM_CLOCK: Clock = SystemClock()
