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
from collections.abc import Callable, Iterable
from datetime import datetime

from scheduler.firing.runs import fire_key, from_fire_key

#: ``paused-fires:<job>``: a JSON list of ``[first, last]`` fire keys (ms since the epoch,
#: :func:`scheduler.firing.runs.fire_key`), oldest first. Each pair is a run of consecutive fires of
#: the job's trigger that a leader skipped because the job was paused.
PAUSED_FIRES_PREFIX = "paused-fires:"
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
