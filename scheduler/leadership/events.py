"""What the election loop tells its listeners: a term started, a term ended.

These are internal events (the runner listens); the public hook events built from them are
:class:`~scheduler.leadership.hooks.LeadershipAcquiredEvent` and
:class:`~scheduler.leadership.hooks.LeadershipLostEvent`, and the exception a job sees is
:class:`scheduler.errors.LeadershipLost`. The elector logs the same two facts as
``leadership_acquired`` and ``leadership_lost``: names operators alert on and the chaos
checker counts, kept as they were.

Listeners run on the elector thread and must not block; one that raises is logged and the
next one still runs (kazoo's ``add_listener``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scheduler.leadership.term import Term


@dataclass(frozen=True, slots=True)
class TermStarted:
    """This replica acquired the lease: ``term`` begins (logged as ``leadership_acquired``)."""

    term: Term


@dataclass(frozen=True, slots=True)
class TermEnded:
    """This replica's ``term`` ended; ``reason`` says why (logged as ``leadership_lost``).

    Reasons: ``renew_deadline``, ``shutdown``, ``resigned``, ``backend_refused``, or the
    backend's own (``expired``, ``not-holder``, ``released``, ``session-expired``, ...).
    """

    term: Term
    reason: str


TermEvent = TermStarted | TermEnded
Listener = Callable[[TermEvent], None]
