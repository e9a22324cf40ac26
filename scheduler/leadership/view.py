"""What firing sees of leadership: a narrow view of the elector.

The runner and the claims layer (:mod:`scheduler.firing`) never hold the
:class:`~scheduler.leadership.elector.Elector` itself (its loop, presence, health, metrics,
timings). They read the term this replica leads right now, whether the backend has answered
since its last failed call, and the operator controls as last read; they hear of terms
starting and ending; and they act on leadership in one way only: by reporting a backend call
of their own that failed (:meth:`Leadership.report`), which may end the term. Timings and
metrics are given to the runner separately.

The elector satisfies :class:`Leadership`; tests drive a runner with a stand-in
(``tests/harness/stand_in.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from scheduler.errors import BackendError, LeaseLost
from scheduler.leadership.controls import OperatorControls
from scheduler.leadership.events import Listener
from scheduler.leadership.term import Term


class ControlsView(Protocol):
    """The operator controls as this replica last read them."""

    @property
    def current(self) -> OperatorControls:
        """The controls as last read (none until the first read)."""
        ...

    def refresh(self) -> bool:
        """Re-read the controls now; ``False`` if they could not be read (the last ones read
        are kept)."""
        ...


class Leadership(Protocol):
    """Whether, and in which term, this replica leads; and how to report a failed call."""

    @property
    def backend_ok(self) -> bool:
        """True once a backend call succeeded and until one fails: no fire is claimed while
        it is false (a claim in the dark could only be lost)."""
        ...

    @property
    def controls(self) -> ControlsView:
        """The operator controls (pauses, and the fires pauses skipped)."""
        ...

    def current_term(self) -> Term | None:
        """The term this replica leads in right now, or ``None`` (computed, no network)."""
        ...

    def stall_reason(self) -> str | None:
        """Why the lease cannot be trusted after a process stall, or ``None``."""
        ...

    def report(
        self, exc: BackendError | LeaseLost, term: Term | None = None, *, in_doubt: bool = False
    ) -> None:
        """Report a backend call of this replica that failed; must not block beyond one
        release of the lease.

        Args:
            exc: the error. :class:`LeaseLost` (the backend refused a call made under
                ``term``'s lease) ends ``term`` at once; a permanent error ends leadership
                until an operator's fix passes a re-check; other errors change nothing more.
            term: the term the call was made under (needed for ``LeaseLost``).
            in_doubt: the call may have landed unanswered (a claim, a start): the backend
                counts as unconfirmed (:attr:`backend_ok` false) until a call succeeds.
        """
        ...

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` (it must not block) each time a term starts or ends."""
        ...

    def on_backend_ok(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (it must not block) each time the backend answers again after a
        failed call."""
        ...
