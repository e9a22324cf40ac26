"""Catch-up planning: which missed fires a new leader runs, as a pure function.

A leader that takes over (or a term that skipped fires while the backend did not answer)
looks back ``misfire_grace`` and runs the fires nobody handled, per the job's ``catch_up``:

* ``all``: every unhandled fire of the look-back window after the earliest handled one,
  oldest first — also holes *before* a newer claim: a previous leader may have lost its term
  part-way through its own backlog (chaos finding F3).
* ``latest``: the newest unhandled fire after the newest claim, if any (an older hole is
  superseded by the later run).
* ``none``: nothing.

A fire is *handled* if it was claimed (whatever became of the claim) or a leader skipped it
because the job was paused (:mod:`scheduler.firing.pauses`). A job with no history at all
has missed nothing: a cold start does not replay the past.

Nothing here reads a clock, a backend or a thread: the runner reads the history and the
claimed fire keys (in :func:`claims_window`) and queues what :func:`plan` returns.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence
from datetime import datetime, timedelta

from scheduler.firing.runs import RunRecord, fire_key
from scheduler.jobs.schedules import fires_between
from scheduler.jobs.spec import JobSpec

#: How long before a fire instant the leader claims it, so the claim's round trip to the
#: backend is not part of the job's lateness (the runner's trigger fires this early; the job
#: still starts at the instant). A catch-up plans fires up to this far past now: the trigger
#: handed those to the replica before it led, and it dropped them.
CLAIM_AHEAD = timedelta(milliseconds=25)


def due(spec: JobSpec, now: datetime) -> list[datetime]:
    """The fires of ``spec`` a catch-up at ``now`` looks at: within ``misfire_grace`` before
    ``now``, up to :data:`CLAIM_AHEAD` after it; oldest first."""
    start = now - timedelta(seconds=spec.misfire_grace)
    return fires_between(spec.trigger, start, now + CLAIM_AHEAD)


def claims_window(
    spec: JobSpec, history: Sequence[RunRecord], now: datetime
) -> tuple[datetime, datetime] | None:
    """The fire instants whose claims :func:`plan` needs (``[first, last]``), or ``None`` if
    it needs none (``catch_up`` ``none`` or ``latest``, no history, nothing due).

    Raises:
        OverflowError: ``misfire_grace`` reaches past the calendar.
    """
    if spec.catch_up != "all" or not history:
        return None
    fires = due(spec, now)
    return (fires[0], fires[-1]) if fires else None


def plan(
    spec: JobSpec,
    history: Sequence[RunRecord],
    claimed: Collection[int],
    paused: Container[datetime],
    now: datetime,
) -> list[datetime]:
    """The fires of ``spec`` a catch-up at ``now`` runs, oldest first.

    Args:
        spec: the job (``trigger``, ``misfire_grace``, ``catch_up``).
        history: its newest run records, newest fire first (any state).
        claimed: the fire keys (:func:`~scheduler.firing.runs.fire_key`) claimed within
            :func:`claims_window`; keys outside it are ignored. Only ``all`` reads them.
        paused: the fires some leader skipped because the job was paused.
        now: the wall-clock time of the catch-up.

    Returns:
        The fires nobody handled that the job's ``catch_up`` policy runs; ``[]`` for a job
        with no history (a cold start replays nothing).

    Raises:
        OverflowError: ``misfire_grace`` reaches past the calendar.
    """
    if spec.catch_up == "none" or not history:
        return []
    newest_claim = history[0].scheduled_time
    fires = due(spec, now)
    skipped = {fire_key(f) for f in fires if f in paused}
    if spec.catch_up == "latest":
        handled = max([newest_claim, *(f for f in fires if fire_key(f) in skipped)])
        return [f for f in fires if f > handled][-1:]
    if not fires:
        return []
    first, last = fire_key(fires[0]), fire_key(fires[-1])
    handled_keys = {key for key in claimed if first <= key <= last} | skipped
    # Holes count from the earliest fire handled: fires before any are the time before this
    # job ever ran, which a cold start does not replay.
    anchor = min(handled_keys) if handled_keys else fire_key(newest_claim)
    return [f for f in fires if fire_key(f) > anchor and fire_key(f) not in handled_keys]
