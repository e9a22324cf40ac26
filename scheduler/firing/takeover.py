"""A leader's look back: the runs older terms left unfinished, and the fires nobody ran.

When a term starts (and again when a term that skipped fires during an outage can reach the
backend), :class:`Takeover` reads every job's newest run records in ranged reads (see
:mod:`scheduler.firing.catchup` for what is read and why), has the claims layer settle the
unfinished runs of older terms among them (:meth:`~scheduler.firing.claims.Claims.adopt`),
plans each job's missed fires with the pure planner and hands them to the job's lane. The
runner owns when it happens; this owns what is read and queued.

**In chunks of up to** :data:`CHUNK` **jobs**, each read, adopted and planned on its own: with
thousands of jobs one read of everything is many requests (ZooKeeper: a listing and a read
per job), and under load it missed its ``op_timeout`` again and again, so no job was ever
caught up (a chaos run with 2,000 jobs: 40 ticks of a ``catch_up="all"`` job not caught up).
A chunk that fails leaves the others done; the whole catch-up is owed again (the
maintenance loop), and the fires the done chunks queued are not proposed twice (one
attempt per fire per term). The chunks go most urgent first
(:func:`~scheduler.firing.catchup.by_urgency`): a term too short for the whole catch-up
catches up the jobs with the most fires at stake.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import datetime
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.backends.runs import RunRecord
from scheduler.clock import Clock
from scheduler.errors import BackendError
from scheduler.firing import catchup
from scheduler.firing.catchup import MOST_AHEAD, ORPHAN_SCAN
from scheduler.firing.claims import Claims
from scheduler.firing.tally import SAMPLE
from scheduler.jobs.spec import JobSpec
from scheduler.leadership.term import Term
from scheduler.leadership.view import Leadership

#: Jobs read, adopted and planned together (see the module docstring): a few hundred
#: requests on ZooKeeper, one pipeline on Redis, one query on SQLite and PostgreSQL.
CHUNK = 200
#: Jobs in the first chunk; each next chunk is twice as big, up to :data:`CHUNK`. The most
#: urgent jobs come first (:func:`~scheduler.firing.catchup.by_urgency`), and a small first
#: read queues their missed fires within one round trip of the term's start, before the
#: rest of the catch-up loads the backend (a chaos run with 2,000 jobs on ZooKeeper: a
#: first chunk of 200 jobs took seconds to read, and terms ended before its fires ran).
FIRST_CHUNK = 8


class Takeover:
    """Catch-up and adoption for one runner.

    Args:
        specs: the loaded jobs.
        leadership: the operator controls (re-read first) and where failures are reported.
        backend: the run ledger the history is read from.
        cluster: election name.
        claims: the claims layer (adoption, pauses, the catch-up owed after a failure).
        submit: queues fires on a job's lane (``submit(job, fires)``).
        clock: the wall clock the look-back counts from.
        log: the runner's logger.
        unhanded: each job's first fire the fire loop has not handed over yet
            (:meth:`~scheduler.firing.fireloop.FireLoop.unhanded`): the catch-up plans the
            fires before it (default: up to ``CLAIM_AHEAD`` past now).
    """

    def __init__(
        self,
        specs: Sequence[JobSpec],
        leadership: Leadership,
        backend: LeaseBackend,
        cluster: str,
        claims: Claims,
        submit: Callable[[str, list[datetime]], None],
        clock: Clock,
        log: Any,
        unhanded: Callable[[str], datetime | None] | None = None,
    ) -> None:
        self._specs = list(specs)
        self._leadership = leadership
        self._backend = backend
        self._cluster = cluster
        self._claims = claims
        self._submit = submit
        self._clock = clock
        self._log = log
        self._unhanded = unhanded

    def run(self, term: Term) -> dict[str, list[datetime]]:
        """Queue the fires ``term`` missed, per each job's ``catch_up`` policy.

        What to run is planned by :func:`scheduler.firing.catchup.plan`; this reads what the
        plan needs — every job's newest records, :data:`CHUNK` jobs per ranged read (two
        when some job catches up ``all``: see :mod:`scheduler.firing.catchup`), the fires
        pauses skipped —
        and settles the unfinished runs of older terms it finds (``Claims.adopt``).
        A ``catch_up="none"`` job is read only for that. One job's failure is logged
        (``catch_up_failed``) and never skips the others; a failed read is retried once the
        backend answers (the maintenance loop).

        Returns:
            The fires queued, by job (jobs with none left out).
        """
        queued: dict[str, list[datetime]] = {}
        if not self._leadership.controls.refresh():  # pauses set while this replica followed
            # Without them, a fire another leader skipped as paused would look missed
            # (scheduler.firing.pauses): catch up once they can be read (the maintenance loop).
            self._claims.skipped(term)
            return queued
        now = self._clock.now()
        if not term.valid():
            return queued
        unread = 0
        failure: BackendError | None = None
        try:
            ordered = catchup.by_urgency(self._specs, now)
        except OverflowError:  # a look-back past the calendar: planning says so, per job
            ordered = self._specs
        for chunk in growing_chunks(ordered, FIRST_CHUNK, CHUNK):
            if not term.valid():
                break
            try:
                histories, limit = self._read_histories(chunk, now)
            except BackendError as exc:
                unread += len(chunk)
                failure = failure or exc
                continue
            self._claims.adopt([run for runs in histories.values() for run in runs], term, now)
            for spec in chunk:
                if spec.catch_up == "none":
                    continue
                if not term.valid():
                    break
                missed = self._plan(spec, histories.get(spec.name, []), limit, now)
                if not missed:
                    continue
                self._log.debug(
                    "catch_up",
                    job=spec.name,
                    missed=len(missed),
                    policy=spec.catch_up,
                    fires=[f.isoformat() for f in missed][-10:],
                )
                self._submit(spec.name, missed)
                queued[spec.name] = missed
        if failure is not None:
            self._log.warning("catch_up_failed", jobs=unread, error=str(failure))
            self._leadership.report(failure)
            self._claims.skipped(term)
        if queued:
            self._log.info(
                "catch_up_queued",
                jobs=sorted(queued)[:SAMPLE],
                job_count=len(queued),
                missed=sum(len(fires) for fires in queued.values()),
                token=term.token,
            )
        return queued

    def _read_histories(
        self, specs: Sequence[JobSpec], now: datetime
    ) -> tuple[dict[str, list[RunRecord]], int]:
        """The newest records of ``specs``' jobs, for adoption and planning: one ranged
        read of ``ORPHAN_SCAN`` records per job, and one of :func:`~scheduler.firing.
        catchup.read_limit` records per job for the jobs that catch up ``all``.

        Returns:
            The records by job, and the limit the ``all`` jobs were read with.
        """
        every = [spec for spec in specs if spec.catch_up == "all"]
        others = [spec.name for spec in specs if spec.catch_up != "all"]
        try:
            limit = catchup.read_limit(every, now)
        except OverflowError:  # a look-back past the calendar: planning says so, per job
            limit = ORPHAN_SCAN
        histories: dict[str, list[RunRecord]] = {}
        if others:
            histories.update(self._backend.history_many(self._cluster, others, ORPHAN_SCAN))
        if every:
            names = [spec.name for spec in every]
            histories.update(self._backend.history_many(self._cluster, names, limit))
        return histories, limit

    def _until(self, job: str, now: datetime) -> datetime | None:
        """Where ``job``'s catch-up stops: its first fire the fire loop has not handed over
        (all handed over: the loop's longest lead past now)."""
        if self._unhanded is None:
            return None
        return self._unhanded(job) or now + MOST_AHEAD

    def _plan(
        self, spec: JobSpec, recent: list[RunRecord], limit: int, now: datetime
    ) -> list[datetime]:
        """The missed fires of ``spec`` to queue (``[]`` after a failure, logged)."""
        try:
            until = self._until(spec.name, now)
            window = catchup.claims_window(spec, recent, now, until)
            claimed: Collection[int] = frozenset()
            if window is not None:
                found = catchup.claimed_in(recent, window, limit)
                if found is None:  # the read may have stopped inside the window
                    found = frozenset(self._backend.claimed(self._cluster, spec.name, *window))
                claimed = found
            paused = self._claims.paused_fires(spec.name)
            return catchup.plan(spec, recent, claimed, paused, now, until)
        except BackendError as exc:
            self._log.warning("catch_up_failed", job=spec.name, error=str(exc))
            self._leadership.report(exc)
        except Exception as exc:  # one job's bug must not skip the catch-up of the rest
            error = f"{type(exc).__name__}: {exc}"
            self._log.error("catch_up_failed", job=spec.name, error=error)
        return []


def growing_chunks(items: Sequence[JobSpec], first: int, most: int) -> Iterator[Sequence[JobSpec]]:
    """``items`` in consecutive chunks of ``first``, then twice as many each time, at most
    ``most`` (``first`` and ``most`` at least 1)."""
    size, start = max(1, first), 0
    while start < len(items):
        yield items[start : start + size]
        start += size
        size = min(max(1, most), size * 2)
