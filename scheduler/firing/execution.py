"""Running a started fire: the bounded job pool and what one run does there.

The runner hands every fire the backend stored as started to :class:`Execution`, which runs
it on a worker of the job pool, a ``ThreadPoolExecutor(max_workers)`` shared by every job (a
process job's worker waits for its child). A run calls the job under a
:class:`~scheduler.jobs.context.JobContext`, counts it, and queues its outcome with the claims
layer (stored in batches by the maintenance loop). A started fire that can no longer be
called (the replica stops firing, or its term ended while it waited for a worker) is
recorded ``lost``: a started fire is never given back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from scheduler.backends.runs import RunRecord
from scheduler.clock import Clock
from scheduler.errors import LeadershipLost
from scheduler.firing.claims import Claims
from scheduler.firing.coroutines import Coroutines
from scheduler.firing.isolation import run_in_child
from scheduler.firing.lanes import Lane
from scheduler.firing.tally import SkipReason, Tally
from scheduler.jobs.context import JobContext
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.leadership.view import Leadership
from scheduler.ops.metrics import Metrics

__all__ = [
    "NOT_CALLED_LOST",
    "NOT_CALLED_SHUTDOWN",
    "Execution",
    "abort_grace",
    "describe_error",
    "pool_problem",
]

#: The message of a run started in the backend whose job was not called: the replica stopped
#: firing, or its term ended while the run waited for a worker.
NOT_CALLED_SHUTDOWN = "replica shut down before the job was called"
NOT_CALLED_LOST = "leadership lost before the job was called"
#: Seconds between looks at whether a start slice waiting for the pool should give up.
RECHECK = 0.5


def describe_error(exc: BaseException) -> str:
    """How history records a failed run: ``Type: text``, or ``Type`` when the text is empty
    (``sys.exit()``). /status shows only the ``Type`` part by default (scheduler.ops.http)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def pool_problem(pool: ThreadPoolExecutor, name: str) -> str | None:
    """Why ``pool`` can no longer run work, or ``None``."""
    # ThreadPoolExecutor keeps its threads private and never replaces one that died: work
    # queued behind a dead worker waits for ever (a lane stays busy, its job never runs).
    if getattr(pool, "_shutdown", False):
        return f"{name} is shut down"
    dead = sum(not thread.is_alive() for thread in getattr(pool, "_threads", ()))
    return f"{name}: {dead} worker thread(s) died" if dead else None


def abort_grace(timings: LeaseTimings) -> float:
    """Seconds between SIGTERM and SIGKILL for a process job: a quarter of the time
    between giving up leadership and the lease's expiry, at most 1 s."""
    return max(0.05, min(1.0, (timings.lease_ttl - timings.renew_deadline) / 4))


class Execution:
    """Runs started fires on the job pool and hands their outcomes to the claims layer.

    Args:
        pool: the job pool (its workers run the jobs).
        claims: where outcomes are queued.
        leadership: the stall reason a job's context reports.
        accepting: whether fires may still be called (false once the replica stops firing).
        replica_id: this replica (in each job's context).
        timings: the lease timings (how long a process job may take to abort).
        metrics: where runs, durations and lateness are counted.
        clock: wall clock for lateness and outcomes, monotonic for durations.
        log: the runner's logger.
        coroutines: where ``async def`` jobs run (``None`` when there are none).
    """

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        claims: Claims,
        leadership: Leadership,
        accepting: Callable[[], bool],
        *,
        replica_id: str,
        timings: LeaseTimings,
        metrics: Metrics,
        clock: Clock,
        log: Any,
        coroutines: Coroutines | None = None,
    ) -> None:
        self.pool = pool
        self._coroutines = coroutines
        self._claims = claims
        self._tally: Tally = claims.tally
        self._leadership = leadership
        self._accepting = accepting
        self._replica_id = replica_id
        self._timings = timings
        self._metrics = metrics
        self._clock = clock
        self._log = log
        # Started fires waiting for a worker, and the condition a start slice waits on.
        self._backlog = 0
        self._taken = threading.Condition()

    def _took(self) -> None:
        """A worker took a started fire (or the pool refused it)."""
        with self._taken:
            self._backlog -= 1
            self._taken.notify_all()

    def wait_backlog(self, most: int, give_up: Callable[[], bool]) -> None:
        """Wait until fewer than ``most`` started fires wait for a worker, or ``give_up()``
        (checked whenever a worker takes one, on :meth:`wake`, and every
        :data:`RECHECK` seconds: a term can end while every worker runs a long job)."""
        with self._taken:
            while self._backlog >= most and not give_up():
                self._taken.wait(RECHECK)

    def wake(self) -> None:
        """Make :meth:`wait_backlog` look at its ``give_up`` again."""
        with self._taken:
            self._taken.notify_all()

    def submit(self, lane: Lane, run: RunRecord, term: Term) -> None:
        """Run the started ``run`` on a worker of the job pool (or record it lost if the
        pool is gone)."""
        with self._taken:
            self._backlog += 1
        try:
            self.pool.submit(self._execute, lane, run, term)
        except RuntimeError:  # the pool is shut down (closing): started, never called
            self._took()
            self._claims.finish_later(
                [run.finished("lost", self._clock.now(), NOT_CALLED_SHUTDOWN)]
            )
            self._tally.skipped(SkipReason.SHUTDOWN, [run.job])
            lane.done()

    def _execute(self, lane: Lane, run: RunRecord, term: Term) -> None:
        """A pool worker: call the job of the started ``run``, then free its lane.

        The fire is stored as started, so if it cannot be called any more (the replica
        stops firing, or the term ended while it waited for a worker) it is recorded
        ``lost``: a started fire is never given back.
        """
        self._took()
        try:
            why = None
            if not self._accepting():
                why, reason = NOT_CALLED_SHUTDOWN, SkipReason.SHUTDOWN
            elif term.lost.is_set():
                why, reason = NOT_CALLED_LOST, SkipReason.ABANDONED
            if why is None:
                self._run(lane, run, term)
            else:
                self._claims.finish_later([run.finished("lost", self._clock.now(), why)])
                self._tally.skipped(reason, [run.job])
        except BaseException:  # a bug here must never keep the lane busy or end the worker
            self._log.exception("fire_failed", job=lane.spec.name)
        finally:
            lane.done()

    def _run(self, lane: Lane, run: RunRecord, term: Term) -> None:
        ctx = JobContext(
            job=run.job,
            scheduled_time=run.scheduled_time,
            fencing_token=run.token,
            replica_id=self._replica_id,
            lost=term.lost,
            _deadline=term.lease_deadline,
            _clock=self._clock,
            _suspect=self._leadership.stall_reason,
            _on_lost=term.on_end,
        )
        log = self._log
        lateness = (self._clock.now() - run.scheduled_time).total_seconds()
        series = self._metrics.job_series(run.job)
        series.lateness.observe(max(lateness, 0.0))
        self._tally.started(run.job, lateness)
        when = run.scheduled_time.isoformat()
        log.debug(
            "job_started",
            job=run.job,
            scheduled_time=when,
            token=term.token,
            lateness=round(lateness, 4),
            isolation=lane.spec.isolation,
        )
        lane.active, lane.active_ctx = run, ctx
        started = self._clock.monotonic()
        if lane.spec.isolation == "process":
            result = run_in_child(lane.spec.func, ctx, abort_grace(self._timings))
            outcome, message = result.outcome, result.message
            if outcome == "error":
                log.error(
                    "job_failed", job=run.job, scheduled_time=when, token=term.token, error=message
                )
        else:
            try:
                if self._coroutines is not None and lane.spec.is_async:
                    # A task on the event loop; this worker waits for it, off the loop.
                    self._coroutines.run(lane.spec.func, ctx, term)  # type: ignore[arg-type]
                else:
                    lane.spec.func(ctx)
            except LeadershipLost as exc:
                outcome, message = "lost", str(exc)
            except BaseException as exc:
                # Also sys.exit(), KeyboardInterrupt, GeneratorExit and other BaseExceptions:
                # in a pool thread they end only this run, never the lane or the replica.
                outcome, message = "error", describe_error(exc)
                log.exception(
                    "job_failed", job=run.job, scheduled_time=when, token=term.token, error=message
                )
            else:
                outcome, message = "ok", ""
        duration = self._clock.monotonic() - started
        if lane.active is not run:
            return  # the runner's close() already recorded it as lost during shutdown
        lane.active, lane.active_ctx = None, None
        series.runs(outcome).inc()
        series.duration.observe(duration)
        self._tally.ended(outcome)
        log.debug(
            "job_finished",
            job=run.job,
            scheduled_time=when,
            token=term.token,
            outcome=outcome,
            duration=round(duration, 4),
        )
        self._claims.finish_later([run.finished(outcome, self._clock.now(), message)])
