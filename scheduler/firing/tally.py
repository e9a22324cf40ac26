"""What became of the fires of a burst: one summary line, and every fire not run counted.

A leader with thousands of jobs sees them fall due together (a *burst*). Two log lines per
fire cost more CPU than running the fires (issue 13), so the per-fire lines (``job_started``,
``job_finished``, ``fire_paused``, ``fire_already_claimed``, ...) are logged at ``debug``,
and :class:`Tally` writes one ``fires_summary`` line per burst at ``info``: how many fires
were claimed and started, how runs ended, and how many were *not* run and why. Failures
stay one line each (``job_failed`` at ``error``, with its traceback), and batch failures
are one line per batch (``claim_failed``, ``start_failed``).

**No fire disappears silently.** Every fire this leader is handed and does not run is
counted here with a :class:`SkipReason`: in ``baton_fires_skipped_total{reason}`` at once
and in the next summary (at ``warning`` when a reason means a fire may not run anywhere).
Fires a follower drops are not counted: the leader runs them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from scheduler.ops.metrics import Metrics

#: Seconds without a new event after which a burst is summarised.
QUIET = 0.25
#: Seconds after the first unreported event at which a summary is written anyway (a leader
#: that never goes quiet still writes one line every this often).
LONGEST = 5.0
#: Job names listed in a summary line (sorted; the count is always complete).
SAMPLE = 10


class SkipReason(StrEnum):
    """Why a fire handed to this leader was not run by it (the ``reason`` label)."""

    #: A lane held an unstarted fire of a job that was busy, and a newer fire superseded it
    #: (``catch_up`` ``latest``/``none`` run only the newest of a backlog).
    COALESCED = "coalesced"
    #: Past the job's ``misfire_grace`` before it could be claimed, confirmed or started.
    MISSED = "missed"
    #: The job is paused; recorded in ``paused-fires:<job>`` so no catch-up runs it.
    PAUSED = "paused"
    #: Another attempt holds the fire's record (another leader, an older term).
    CLAIMED_ELSEWHERE = "claimed_elsewhere"
    #: The backend had not answered since a failed call: the fire is caught up once it does.
    BACKEND_UNCONFIRMED = "backend_unconfirmed"
    #: Proposed again in the term that already attempted it (one attempt per fire per term).
    ALREADY_ATTEMPTED = "already_attempted"
    #: The backend refused the claim: the lease was lost (the next leader catches up).
    LEASE_LOST = "lease_lost"
    #: Claimed, then leadership was lost before its instant: given back for the next leader.
    ABANDONED = "abandoned"
    #: The backend refused the start (the claim was gone, another's, or already started).
    NOT_STARTED = "not_started"
    #: A graceful resign was under way: the next leader catches it up.
    RESIGNING = "resigning"
    #: Queued, claimed or started but not yet called when the replica stopped firing.
    SHUTDOWN = "shutdown"


#: Reasons after which the fire may not run anywhere: the summary is a warning.
WARN = frozenset(
    {
        SkipReason.COALESCED,
        SkipReason.MISSED,
        SkipReason.BACKEND_UNCONFIRMED,
        SkipReason.LEASE_LOST,
        SkipReason.ABANDONED,
        SkipReason.NOT_STARTED,
        SkipReason.SHUTDOWN,
    }
)


class Tally:
    """Counts of one burst, written as one ``fires_summary`` line when it is over.

    Thread-safe without a lock on the hot path: every worker of the job pool reports each
    run here, so a report is one append to a deque (atomic in CPython) and the counts are
    made when the summary is written. :meth:`summarise` is called by the maintenance loop
    (it writes only when due).

    Args:
        metrics: where skipped fires are counted (``baton_fires_skipped``).
        log: the runner's logger.
        monotonic: the clock bursts are timed on (real time: this is reporting, not lease
            logic).
    """

    def __init__(
        self, metrics: Metrics, log: Any, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._metrics = metrics
        self._log = log
        self._monotonic = monotonic
        self._events: deque[tuple[str, str, float]] = deque()  # (kind, name, value)
        self._first: float | None = None  # monotonic time of the first unreported event
        self._last = 0.0
        self._summary = threading.Lock()  # one summary at a time

    def _event(self, kind: str, name: str, value: float = 1.0) -> None:
        now = self._monotonic()
        if self._first is None:
            self._first = now
        self._last = now
        self._events.append((kind, name, value))

    # -- what happened ------------------------------------------------------------------------

    def skipped(self, reason: SkipReason, jobs: list[str]) -> None:
        """The fires of ``jobs`` (one entry per fire) were not run, for ``reason``."""
        if not jobs:
            return
        self._metrics.fires_skipped.labels(reason.value).inc(len(jobs))
        self._event("skipped", reason.value, len(jobs))
        for job in sorted(set(jobs))[:SAMPLE]:
            self._event("skipped_job", job, 0.0)

    def claimed(self, count: int) -> None:
        """``count`` fires were claimed."""
        if count:
            self._event("claimed", "", count)

    def in_doubt(self, count: int) -> None:
        """``count`` claims or starts went unanswered (settled later)."""
        if count:
            self._event("in_doubt", "", count)

    def started(self, job: str, lateness: float) -> None:
        """A run of ``job`` began ``lateness`` seconds after its instant."""
        self._event("started", job, lateness)

    def ended(self, outcome: str) -> None:
        """A run ended with ``outcome`` (``ok``, ``error``, ``lost``)."""
        self._event("ended", outcome)

    # -- the summary --------------------------------------------------------------------------

    def next_summary(self) -> float | None:
        """Seconds until the summary is due, or ``None`` while there is nothing to report."""
        first = self._first
        if first is None:
            return None
        due = min(self._last + QUIET, first + LONGEST)
        return max(0.0, due - self._monotonic())

    def summarise(self, force: bool = False) -> bool:
        """Write the ``fires_summary`` line if the burst is over (or ``force``).

        Returns:
            Whether a line was written.
        """
        with self._summary:
            first = self._first
            if first is None:
                return False
            if not force and self._monotonic() < min(self._last + QUIET, first + LONGEST):
                return False
            self._first = None  # events appended from now on belong to the next summary
            counts: Counter[str] = Counter()
            ended: Counter[str] = Counter()
            skipped: Counter[str] = Counter()
            jobs: set[str] = set()
            skipped_jobs: set[str] = set()
            lateness_max = 0.0
            drained = len(self._events)  # later appends are the next summary's
            for _ in range(drained):
                kind, name, value = self._events.popleft()
                if kind == "started":
                    counts["started"] += 1
                    lateness_max = max(lateness_max, value)
                    if len(jobs) < SAMPLE:
                        jobs.add(name)
                elif kind == "ended":
                    ended[name] += 1
                elif kind == "skipped":
                    skipped[name] += int(value)
                elif kind == "skipped_job":
                    if len(skipped_jobs) < SAMPLE:
                        skipped_jobs.add(name)
                else:
                    counts[kind] += int(value)
        if not drained:
            return False
        fields: dict[str, Any] = {
            "claimed": counts["claimed"],
            "started": counts["started"],
            "ended": dict(sorted(ended.items())),
            "skipped": dict(sorted(skipped.items())),
        }
        if counts["in_doubt"]:
            fields["in_doubt"] = counts["in_doubt"]
        if counts["started"]:
            fields["lateness_max"] = round(lateness_max, 4)
            fields["jobs"] = sorted(jobs)
        if skipped:
            fields["skipped_jobs"] = sorted(skipped_jobs)
        if any(reason in WARN for reason in skipped):
            self._log.warning("fires_summary", **fields)
        else:
            self._log.info("fires_summary", **fields)
        return True
