"""Clocks: the lease logic reads time only through :class:`Clock`, so tests can move it.

Lease deadlines use :meth:`Clock.monotonic` only; the wall clock (:meth:`Clock.now`) is read
solely to name fire instants and to stamp history records, never to decide who leads.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Source of time for the elector, the runner and the backends."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (arbitrary origin)."""
        ...

    def now(self) -> datetime:
        """The current wall-clock time as an aware UTC datetime."""
        ...


class SystemClock:
    """The real clocks: ``time.monotonic`` and ``datetime.now(UTC)``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when told to; for unit tests of timing logic.

    Args:
        start: the initial monotonic reading, in seconds.
        wall: the initial wall-clock time (aware); defaults to 2026-01-01T00:00:00Z.
    """

    def __init__(self, start: float = 1000.0, wall: datetime | None = None) -> None:
        self._mono = start
        self._wall = wall or datetime(2026, 1, 1, tzinfo=UTC)

    def monotonic(self) -> float:
        return self._mono

    def now(self) -> datetime:
        return self._wall

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds``."""
        from datetime import timedelta

        self._mono += seconds
        self._wall += timedelta(seconds=seconds)


SYSTEM_CLOCK: Clock = SystemClock()
