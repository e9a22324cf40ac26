"""A stand-in for the elector, for tests that drive a real Runner on a real backend.

It only says which term this replica leads (the test sets ``term``) and answers what else
the runner asks of leadership (:class:`scheduler.leadership.view.Leadership`); the backend
under the runner is never faked.
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.errors import BackendError, LeaseLost
from scheduler.leadership.controls import OperatorControls
from scheduler.leadership.events import Listener
from scheduler.leadership.lease import Holder
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.metrics import Metrics


class NoControls:
    """No operator controls in these tests: always read, and empty."""

    current = OperatorControls()

    def refresh(self) -> bool:
        return True


class StandInElector:
    """Says which term this replica leads; everything else the runner asks of leadership.

    ``holder``, ``timings`` and ``metrics`` are what a test hands the runner beside it.
    """

    def __init__(self, replica: str, timings: LeaseTimings) -> None:
        self.holder = Holder.new(replica)
        self.term: Term | None = None
        self.metrics = Metrics()
        self.timings = timings
        self.controls = NoControls()
        self.backend_ok = True

    def current_term(self) -> Term | None:
        return self.term

    def add_listener(self, listener: Listener) -> None:
        """Elections are driven by the test."""

    def on_backend_ok(self, callback: Callable[[], None]) -> None:
        """The test settles by hand."""

    def stall_reason(self) -> str | None:
        return None

    def report(
        self, exc: BackendError | LeaseLost, term: Term | None = None, *, in_doubt: bool = False
    ) -> None:
        """A failed call: a lost lease ends its term; one that may have landed leaves the
        backend unconfirmed (the test confirms it again by setting ``backend_ok``)."""
        if isinstance(exc, LeaseLost):
            if term is not None and self.term is term:
                self.term = None
            return
        if in_doubt:
            self.backend_ok = False
