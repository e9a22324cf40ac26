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

**What the runner reads.** The history of every job at once, in one ranged read
(:meth:`~scheduler.backends.base.RunLedger.history_many`), never one round trip per job:
the newest :data:`ORPHAN_SCAN` records of each job (what a new leader needs to close the runs
a dead leader left ``running``; a ``catch_up="none"`` job needs nothing else), and, for the
jobs that catch up ``all``, enough records to cover their whole look-back window
(:func:`read_limit`), in a second read so that they do not make every job's read longer.
The claimed fire keys of an ``all`` job come from those records (:func:`claimed_in`); only
when the read cannot cover the window (more records than :data:`MOST_READ` in it) are they
read by themselves.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Sequence
from datetime import datetime, timedelta

from scheduler.backends.runs import RunRecord, fire_key
from scheduler.jobs.schedules import fires_between
from scheduler.jobs.spec import JobSpec

#: The least time before a fire instant the fire loop hands it over to be claimed, so the
#: claim's round trip to the backend is not part of the job's lateness (the job still starts
#: at the instant). A burst gets more: the time its claims are expected to take (see
#: :mod:`scheduler.firing.fireloop`).
CLAIM_AHEAD = timedelta(milliseconds=100)
#: The most time before a fire instant the fire loop hands it over: 500 ms, half the Redis
#: claim allowance (1 s; the other half is room for clock offsets between replica and
#: server). A longer lead claims bigger bursts before their instant, but a claim made early
#: is one more fire to give back if leadership changes before the instant.
MOST_AHEAD = timedelta(milliseconds=500)
#: Newest runs per job a new leader inspects for runs left ``running`` by a dead leader (with
#: lanes, a job has at most one run going per replica, and it is among its newest records).
ORPHAN_SCAN = 10
#: The most records per job one history read asks for (a ``catch_up="all"`` job with a
#: longer look-back has its claimed fires read by themselves).
MOST_READ = 500


def due(spec: JobSpec, now: datetime, until: datetime | None = None) -> list[datetime]:
    """The fires of ``spec`` a catch-up at ``now`` looks at, oldest first: within
    ``misfire_grace`` before ``now``, and before ``until``: the job's first fire the fire
    loop has not handed over yet (it hands that one over itself; default ``now`` plus
    :data:`CLAIM_AHEAD`). The fires after ``now`` are those handed over, and dropped, before
    this replica led."""
    start = now - timedelta(seconds=spec.misfire_grace)
    return fires_between(spec.trigger, start, now + CLAIM_AHEAD if until is None else until)


def claims_window(
    spec: JobSpec, history: Sequence[RunRecord], now: datetime, until: datetime | None = None
) -> tuple[datetime, datetime] | None:
    """The fire instants whose claims :func:`plan` needs (``[first, last]``), or ``None`` if
    it needs none (``catch_up`` ``none`` or ``latest``, no history, nothing due).

    Raises:
        OverflowError: ``misfire_grace`` reaches past the calendar.
    """
    if spec.catch_up != "all" or not history:
        return None
    fires = due(spec, now, until)
    return (fires[0], fires[-1]) if fires else None


def plan(
    spec: JobSpec,
    history: Sequence[RunRecord],
    claimed: Collection[int],
    paused: Container[datetime],
    now: datetime,
    until: datetime | None = None,
) -> list[datetime]:
    """The fires of ``spec`` a catch-up at ``now`` runs, oldest first.

    Args:
        spec: the job (``trigger``, ``misfire_grace``, ``catch_up``).
        history: its newest run records, newest fire first (any state).
        claimed: the fire keys (:func:`~scheduler.backends.runs.fire_key`) claimed within
            :func:`claims_window`; keys outside it are ignored. Only ``all`` reads them.
        paused: the fires some leader skipped because the job was paused.
        now: the wall-clock time of the catch-up.
        until: the job's first fire the fire loop has not handed over (see :func:`due`).

    Returns:
        The fires nobody handled that the job's ``catch_up`` policy runs; ``[]`` for a job
        with no history (a cold start replays nothing).

    Raises:
        OverflowError: ``misfire_grace`` reaches past the calendar.
    """
    if spec.catch_up == "none" or not history:
        return []
    newest_claim = history[0].scheduled_time
    fires = due(spec, now, until)
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


#: The order of the catch-up policies in :func:`by_urgency`: the ones that run missed fires
#: first; ``none`` only has its unfinished runs adopted.
_POLICY_RANK = {"all": 0, "latest": 1, "none": 2}


def by_urgency(specs: Sequence[JobSpec], now: datetime) -> list[JobSpec]:
    """``specs`` in the order a catch-up reads them: ``all`` jobs, then ``latest``, then
    ``none``; within each, the jobs with the most fires in their look-back window first
    (counted up to :data:`MOST_READ`), otherwise as given.

    With thousands of jobs the catch-up is read in chunks, and a short term (a storm of
    backend restarts, a leader paused) may end before the last chunk: the chunks it reaches
    first are the ones with the most to lose (a job firing every second with a 30 s grace
    has 30 fires at stake, one firing every 10 s with a 10 s grace has one), and the jobs
    that run nothing missed (``none``: only their unfinished runs are closed) come last.
    A chaos run with 2,000 such jobs left ticks of its ``all`` job uncaught while the
    catch-up was still reading the others.
    """
    stake = {spec.name: _fires_at_stake(spec, now) for spec in specs if spec.catch_up != "none"}
    return sorted(specs, key=lambda s: (_POLICY_RANK[s.catch_up], -stake.get(s.name, 0)))


def _fires_at_stake(spec: JobSpec, now: datetime) -> int:
    """How many fires of ``spec`` fall in its look-back window, counted up to
    :data:`MOST_READ` (a 100 ms job with a 7-day grace has millions: never listed)."""
    fire = spec.trigger.get_next_fire_time(None, now - timedelta(seconds=spec.misfire_grace))
    count = 0
    while fire is not None and fire < now and count < MOST_READ:
        count += 1
        fire = spec.trigger.get_next_fire_time(fire, fire)
    return count


def read_limit(specs: Sequence[JobSpec], now: datetime) -> int:
    """The records per job a history read needs to cover the look-back of ``specs``: the
    fires of the longest ``claims_window`` plus :data:`ORPHAN_SCAN` (room for records newer
    than ``now``: a leader whose clock ran ahead), at least :data:`ORPHAN_SCAN`, at most
    :data:`MOST_READ`.

    Raises:
        OverflowError: a ``misfire_grace`` reaches past the calendar.
    """
    need = ORPHAN_SCAN
    for spec in specs:
        if spec.catch_up == "all" and need < MOST_READ:
            need = max(need, len(due(spec, now, now + MOST_AHEAD)) + ORPHAN_SCAN)
    return min(need, MOST_READ)


def claimed_in(
    history: Sequence[RunRecord], window: tuple[datetime, datetime], limit: int
) -> frozenset[int] | None:
    """The fire keys of ``history`` within ``window``, or ``None`` if the read that returned
    ``history`` (at most ``limit`` records, newest first) may have stopped inside the window:
    then the claimed fires must be read by themselves.

    Records are never trimmed inside the look-back window (see
    :class:`~scheduler.backends.runs.Retention`), so a read that reaches past the window's
    start has every claim of the window.
    """
    first, last = fire_key(window[0]), fire_key(window[1])
    if len(history) >= limit and (not history or history[-1].key >= first):
        return None
    return frozenset(run.key for run in history if first <= run.key <= last)
