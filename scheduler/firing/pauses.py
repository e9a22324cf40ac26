"""Operator pauses: the fires a pause skipped, recorded by the leader that skipped them.

``baton pause JOB`` stores only the operator's intent, the control ``pause:<job>`` (who
asked); ``baton resume JOB`` deletes it. Neither command records a time. The first design had
the CLI record the pause's span (``paused_at``/``resumed_at``) by the operator's host clock,
and a new leader's catch-up left alone the fires inside it. That span was wrong in two ways:
a second ``pause`` overwrote its start, so it shrank, and the operator's clock is not the
clock fires are computed by. A leader taking over later replayed every fire outside the
shrunken span (issue 10: pause, 8 s, pause, resume, resign ran five skipped ticks at once).

So the leader records its own decision, when it makes it: each fire it skips because the job
is paused goes into the control ``paused-fires:<job>`` as runs of consecutive fire instants
of the job's trigger. A fire instant is the identity of a tick (the run ledger keys on it
too), so no clock is compared with another clock, and a repeated ``pause`` changes nothing.
A catch-up counts a recorded fire as handled, like a claimed one. Whatever the order of
pauses, resumes and handovers, a fire that some leader skipped because of a pause is never
run by a later catch-up. A new leader re-reads the controls before its catch-up, so the
fires it finds missed while the pause is still in force go through the same skip, and are
recorded too.

What this cannot know: a pause that is requested and lifted while no replica leads (inside
one failover) is seen by no leader. The fires of that gap are caught up like any missed
fire. A leader sees a pause or a resume at its next refresh of the controls (they ride
along with renewals: within 2 x ``renew_interval``); a fire it handles before then follows
the old state.

Only the leader writes the record: a read-modify-write of one key per job. One replica
handles one job's fires one at a time (its lane), and a term ends before the next one
begins, so two writers do not interleave (a leader stalled in the middle of the write could
still overwrite, as with any control; the backends fence claims, not controls). A write that
fails is kept in memory and retried on the next skip and by the maintenance loop. Runs that
end before the longest catch-up look-back (plus a margin for wall-clock steps) are dropped,
and at most :data:`MAX_RUNS` are kept.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.backends.runs import fire_key, from_fire_key
from scheduler.clock import Clock
from scheduler.errors import BackendError
from scheduler.jobs.spec import JobSpec
from scheduler.leadership.controls import PAUSED_FIRES_PREFIX

__all__ = [
    "MAX_RUNS",
    "PAUSED_FIRES_PREFIX",
    "PauseRecords",
    "PausedFires",
    "SkippedRun",
    "add_skipped",
    "skipped_runs",
    "was_skipped",
]

# ``paused-fires:<job>`` (PAUSED_FIRES_PREFIX, named with the other controls): a JSON list of
# ``[first, last]`` fire keys (ms since the epoch, :func:`scheduler.backends.runs.fire_key`),
# oldest first. Each pair is a run of consecutive fires of the job's trigger that a leader
# skipped because the job was paused.
#: Runs kept per job. A catch-up looks back only ``misfire_grace``: more runs than this
#: would mean more than this many pauses in that look-back.
MAX_RUNS = 100

SkippedRun = tuple[int, int]


def skipped_runs(raw: str | None) -> list[SkippedRun]:
    """The runs of skipped fires in a ``paused-fires:<job>`` value.

    Returns an empty list for a missing or unreadable value. Any process that can reach the
    backend can write a control, so a value that is not a list of integer pairs counts as
    nothing recorded.
    """
    if raw is None:
        return []
    try:
        items = json.loads(raw)
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    runs: list[SkippedRun] = []
    for item in items:
        if (
            isinstance(item, list)
            and len(item) == 2
            and all(type(v) is int for v in item)
            and item[0] <= item[1]
        ):
            runs.append((item[0], item[1]))
    return runs


def was_skipped(runs: Iterable[SkippedRun], fire: datetime) -> bool:
    """True if ``fire`` lies in one of ``runs`` (a leader skipped it as paused)."""
    key = fire_key(fire)
    return any(first <= key <= last for first, last in runs)


def add_skipped(
    raw: str | None,
    fires: Iterable[datetime],
    next_fire: Callable[[datetime], datetime | None],
    keep_after: datetime,
) -> str:
    """The ``paused-fires:<job>`` value ``raw`` with ``fires`` added.

    Args:
        raw: the current value (``None``: none yet; unreadable: replaced).
        fires: the fire instants just skipped.
        next_fire: the job's fire after a given one. Two runs are merged only when the second
            starts at the fire right after the end of the first, so a fire between them that
            was not skipped (it ran, or it was missed for another reason) stays outside.
        keep_after: runs that end before this instant are dropped (past any catch-up).
    """
    runs = sorted({*skipped_runs(raw), *((fire_key(f), fire_key(f)) for f in fires)})
    merged: list[SkippedRun] = []
    for first, last in runs:
        if merged:
            prev_first, prev_last = merged[-1]
            after = next_fire(from_fire_key(prev_last))
            if first <= prev_last or (after is not None and fire_key(after) >= first):
                merged[-1] = (prev_first, max(prev_last, last))
                continue
        merged.append((first, last))
    horizon = fire_key(keep_after)
    kept = [run for run in merged if run[1] >= horizon][-MAX_RUNS:]
    return json.dumps([list(run) for run in kept], separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class PausedFires:
    """The fires of one job some leader skipped as paused (a container of fire instants).

    Attributes:
        runs: as recorded in ``paused-fires:<job>`` (:func:`skipped_runs`).
        unsaved: skipped by this leader, not stored yet (:class:`PauseRecords`).
    """

    runs: tuple[SkippedRun, ...] = ()
    unsaved: frozenset[datetime] = frozenset()

    def __contains__(self, fire: object) -> bool:
        if not isinstance(fire, datetime):
            return False
        return fire in self.unsaved or was_skipped(self.runs, fire)


class PauseRecords:
    """This leader's record of the fires it skipped as paused: stored at once, or kept in
    memory and stored by a later :meth:`flush` (the next skip, the maintenance loop).

    The lock also keeps this replica's read-modify-writes of one record apart.

    Args:
        specs: the jobs by name (trigger, misfire_grace).
        backend: where the controls live.
        cluster: election name.
        clock: wall clock, for the record's horizon.
        log: the runner's logger.
        margin: seconds a record is kept beyond twice the job's ``misfire_grace`` (room
            for wall clock steps, as claim attempts are remembered).
    """

    def __init__(
        self,
        specs: Mapping[str, JobSpec],
        backend: LeaseBackend,
        cluster: str,
        clock: Clock,
        log: Any,
        margin: float,
    ) -> None:
        self._specs = specs
        self._backend = backend
        self._cluster = cluster
        self._clock = clock
        self._log = log
        self._margin = margin
        self._lock = threading.Lock()
        self._unsaved: dict[str, set[datetime]] = {}

    def add(self, job: str, fire: datetime) -> None:
        """Record that ``fire`` of ``job`` was skipped as paused, and store it (now or later)."""
        self.add_many([(job, fire)])

    def add_many(self, skipped: Iterable[tuple[str, datetime]]) -> None:
        """Record the (job, fire) pairs of ``skipped`` and store them: the controls are read
        once, then one write per job."""
        jobs: set[str] = set()
        with self._lock:
            for job, fire in skipped:
                self._unsaved.setdefault(job, set()).add(fire.astimezone(UTC))
                jobs.add(job)
        if jobs:
            self.flush(jobs)

    def unsaved(self, job: str) -> frozenset[datetime]:
        """The fires of ``job`` recorded here and not stored yet."""
        with self._lock:
            return frozenset(self._unsaved.get(job, ()))

    def pending(self) -> bool:
        """True while some record is not stored."""
        with self._lock:
            return bool(self._unsaved)

    def flush(self, jobs: Iterable[str] | None = None) -> None:
        """Store the unsaved records of ``jobs`` (of every job if ``None``); a failure keeps
        them for the next call (logged as ``paused_fires_record_deferred``)."""
        with self._lock:
            names = sorted(self._unsaved if jobs is None else set(jobs) & set(self._unsaved))
            if not names:
                return
            try:
                current = self._backend.controls(self._cluster)
                for job in names:
                    self._store(job, current.get(PAUSED_FIRES_PREFIX + job))
            except BackendError as exc:
                # Retried by the maintenance loop and the next skip.
                self._log.warning("paused_fires_record_deferred", jobs=len(names), error=str(exc))

    def _store(self, job: str, current: str | None) -> None:
        """Write ``job``'s record (``current`` as read) with its unsaved fires added (with
        ``_lock`` held)."""
        spec = self._specs[job]
        fires = set(self._unsaved.get(job, ()))
        # Past the catch-up look-back, with the margin for clock steps.
        horizon = self._clock.now() - timedelta(seconds=2 * spec.misfire_grace + self._margin)
        value = add_skipped(
            current, fires, lambda f: spec.trigger.get_next_fire_time(f, f), horizon
        )
        self._backend.set_control(self._cluster, PAUSED_FIRES_PREFIX + job, value)
        left = self._unsaved[job] - fires
        if left:
            self._unsaved[job] = left
        else:
            del self._unsaved[job]
