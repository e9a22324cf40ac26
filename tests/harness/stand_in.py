"""A stand-in for the elector, for tests that drive a real Runner on a real backend.

It only says which term this replica leads (the test sets ``term``) and answers what else
the runner asks of an elector; the backend under the runner is never faked.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.leadership.elector import Term
from scheduler.leadership.lease import Holder
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.metrics import Metrics


class StandInElector:
    """Says which term this replica leads; everything else the runner asks of an elector."""

    def __init__(self, replica: str, timings: LeaseTimings) -> None:
        self.holder = Holder.new(replica)
        self.term: Term | None = None
        self.metrics = Metrics()
        self.timings = timings
        self.controls: dict[str, str] = {}
        self.backend_ok = True

    def current_term(self) -> Term | None:
        return self.term

    def add_listener(self, listener: object) -> None:
        """Elections are driven by the test."""

    def on_backend_ok(self, callback: Callable[[], None]) -> None:
        """The test settles by hand."""

    def stall_reason(self) -> str | None:
        return None

    def refresh_controls(self) -> bool:
        """No controls in these tests: read, and empty."""
        return True

    def lease_lost(self, term: Term, reason: str) -> None:
        """The backend said the lease is gone: this term is over."""
        if self.term is term:
            self.term = None

    def report(self, exc: Exception) -> None:
        """A backend error: the test drives the outcome itself."""
