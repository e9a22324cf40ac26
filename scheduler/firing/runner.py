"""APScheduler glue, lanes and execution: fires in, jobs run, outcomes out.

Every replica runs APScheduler with the same triggers; a fire reaches its job's
:class:`~scheduler.firing.lanes.Lane` through :class:`LaneExecutor`, so a job never overlaps
itself on a replica. The lane hands the fire to :meth:`Runner.run_fire`, and from there a fire
flows one way: the claims layer (:class:`~scheduler.firing.claims.Claims`) claims it if this
replica leads (one atomic backend step that also checks the lease), the runner starts it at
its instant through the claims layer, runs the job with a :class:`JobContext`, and hands the
outcome back to the claims layer to store.

A new leader catches up the fires nobody ran (:mod:`scheduler.firing.catchup` plans them);
the maintenance loop stores outcomes the backend could not take and queues the fires that
settling claims in doubt hands back. Leadership is seen through a narrow view
(:class:`~scheduler.leadership.view.Leadership`), never the elector itself.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.backends.base import LeaseBackend
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import BackendError, LeadershipLost
from scheduler.firing import catchup
from scheduler.firing.catchup import CLAIM_AHEAD
from scheduler.firing.claims import Claims, Fire
from scheduler.firing.isolation import run_in_child
from scheduler.firing.lanes import Lane
from scheduler.firing.runs import RunRecord
from scheduler.jobs.context import JobContext
from scheduler.jobs.schedules import Ahead
from scheduler.jobs.spec import JobSpec
from scheduler.leadership import hooks
from scheduler.leadership.events import TermEvent, TermStarted
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.leadership.view import Leadership
from scheduler.ops.logs import get_logger
from scheduler.ops.metrics import Metrics

#: Newest runs per job a new leader inspects for runs left ``running`` by a dead leader.
ORPHAN_SCAN = 10

#: Exit status of a replica that exits because it lost leadership (``exit_on_lost``).
EXIT_ON_LOST = 3
#: Term-ending reasons that are the replica's own decision, not a loss to react to.
VOLUNTARY = ("shutdown", "resigned")


def _run_by_lane() -> None:
    """Stands in for the job function in APScheduler's bookkeeping; lanes call the job."""


def _pool_problem(pool: ThreadPoolExecutor, name: str) -> str | None:
    """Why ``pool`` can no longer run work, or ``None``."""
    # ThreadPoolExecutor keeps its threads private and never replaces one that died: work
    # queued behind a dead worker waits for ever (a lane stays busy, its job never runs).
    if getattr(pool, "_shutdown", False):
        return f"{name} is shut down"
    dead = sum(not thread.is_alive() for thread in getattr(pool, "_threads", ()))
    return f"{name}: {dead} worker thread(s) died" if dead else None


def describe_error(exc: BaseException) -> str:
    """How history records a failed run: ``Type: text``, or ``Type`` when the text is empty
    (``sys.exit()``). /status shows only the ``Type`` part by default (scheduler.ops.http)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class LaneExecutor(BaseExecutor):  # type: ignore[misc]
    """APScheduler executor that hands each fire to its job's lane instead of running it."""

    def __init__(self, runner: Runner) -> None:
        super().__init__()
        self._runner = runner

    def _do_submit_job(self, job: Any, run_times: list[datetime]) -> None:
        try:
            # APScheduler fires CLAIM_AHEAD early (see Runner.start): add it back.
            self._runner.lanes[job.id].submit([t + CLAIM_AHEAD for t in run_times])
        finally:
            # The lane owns overlap control; APScheduler's instance count goes straight back.
            self._run_job_success(job.id, [])


class Runner:
    """Schedules every job on this replica and runs the fires it wins.

    Args:
        specs: the loaded jobs.
        leadership: whether (and under which term) this replica leads.
        backend: where fires are claimed and outcomes recorded.
        cluster: election name, the namespace of the run history.
        history_limit: runs kept per job.
        clock: wall clock for fire instants, monotonic for deadlines.
        exit_on_lost: exit the process (status 3) after the abort hooks when leadership is
            lost involuntarily, as client-go users do by hand; Kubernetes restarts it.
        replica_id: this replica's id (in run records, logs and hook events).
        timings: the lease timings (how long a process job may take to abort; how long an
            unanswered claim may still land).
        metrics: where fires, runs and claims are counted (a private set by default).
    """

    def __init__(
        self,
        specs: Sequence[JobSpec],
        leadership: Leadership,
        backend: LeaseBackend,
        cluster: str,
        history_limit: int = 100,
        clock: Clock = SYSTEM_CLOCK,
        exit_on_lost: bool = False,
        *,
        replica_id: str,
        timings: LeaseTimings,
        metrics: Metrics | None = None,
    ) -> None:
        self.specs = list(specs)
        self.exit_on_lost = exit_on_lost
        self.leadership = leadership
        self.backend = backend
        self.cluster = cluster
        self.clock = clock
        self.replica_id = replica_id
        self.timings = timings
        self.metrics = metrics or Metrics()
        self.log = get_logger(replica=replica_id)
        self.pool = ThreadPoolExecutor(
            max_workers=max(4, len(self.specs) + 2), thread_name_prefix="baton-job"
        )
        self.accepting = True
        self.lanes = {
            spec.name: Lane(spec, self.pool, self.run_fire, lambda: self.accepting, self.log)
            for spec in self.specs
        }
        self._held = False  # no new fire while a resign is under way
        # Hooks (job on_lost, process-wide leadership hooks) run here, one at a time, so a
        # slow hook never delays the election.
        self.hook_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-hooks")
        # Wakes the maintenance loop: outcomes to store, claims to settle.
        self._maintenance_wake = threading.Event()
        self._stopped = threading.Event()
        self._maintenance: threading.Thread | None = None
        #: A fire's fate: claims, doubts, outcomes, pause records (scheduler.firing.claims).
        self.claims = Claims(
            self.specs,
            leadership,
            backend,
            cluster,
            replica_id=replica_id,
            timings=timings,
            metrics=self.metrics,
            clock=clock,
            log=self.log,
            wake=self._maintenance_wake,
            history_limit=history_limit,
        )
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_executor(LaneExecutor(self), alias="baton")
        leadership.add_listener(self._on_leadership)
        leadership.on_backend_ok(self._maintenance_wake.set)

    def start(self) -> None:
        """Start the fire loop (on every replica, leader or not)."""
        for spec in self.specs:
            self._scheduler.add_job(
                _run_by_lane,
                trigger=Ahead(spec.trigger, CLAIM_AHEAD),
                id=spec.name,
                name=spec.name,
                executor="baton",
                # The lane checks lateness itself; APScheduler must hand over every fire.
                misfire_grace_time=None,
                coalesce=spec.catch_up != "all",
                max_instances=1_000_000,
                replace_existing=True,
            )
        self._scheduler.start()
        self._maintenance = threading.Thread(
            target=self._maintenance_loop, name="baton-maintenance", daemon=True
        )
        self._maintenance.start()

    def threads(self) -> dict[str, threading.Thread]:
        """The runner's loop threads by role (``fire loop``, ``maintenance``), once started.

        Each must stay alive while the runner runs (:meth:`loop_problem` says when one has
        died); for diagnostics.
        """
        found: dict[str, threading.Thread] = {}
        # APScheduler 3 keeps its loop thread private.
        loop = getattr(self._scheduler, "_thread", None)
        if isinstance(loop, threading.Thread):
            found["fire loop"] = loop
        if self._maintenance is not None:
            found["maintenance"] = self._maintenance
        return found

    def wake(self) -> None:
        """Make the fire loop and the maintenance loop look again now (harmless any time)."""
        if self._scheduler.running:
            self._scheduler.wakeup()
        self._maintenance_wake.set()

    def loop_problem(self) -> str | None:
        """Why this runner has stopped working (/healthz), or ``None``.

        The fire loop or the maintenance loop is not running, or a job or hook pool lost a
        thread or was shut down: fires would queue behind it for ever.
        """
        loop = self.threads().get("fire loop")
        if not self._scheduler.running or loop is None or not loop.is_alive():
            return "scheduler loop is not running"
        maintenance = self._maintenance
        if maintenance is not None and not maintenance.is_alive() and not self._stopped.is_set():
            return "maintenance loop is not running"
        return _pool_problem(self.pool, "job pool") or _pool_problem(self.hook_pool, "hook pool")

    def hold_fires(self, held: bool) -> None:
        """Start no new fire while ``held`` (a graceful resign in progress)."""
        self._held = held

    def stop_firing(self) -> None:
        """Start no new fire from now on; running jobs go on."""
        self.accepting = False
        for lane in self.lanes.values():
            lane.drop_pending()
        self._scheduler.shutdown(wait=False)

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for running jobs; True if all have finished."""
        deadline = self.clock.monotonic() + timeout
        for lane in self.lanes.values():
            if not lane.idle.wait(max(0.0, deadline - self.clock.monotonic())):
                return False
        return True

    def close(self) -> None:
        """Record still-running jobs as lost, store unsaved outcomes (bounded), stop threads."""
        now = self.clock.now()
        for lane in self.lanes.values():
            run = lane.active
            if run is not None:
                lane.active = None
                message = "replica shut down before the run ended"
                self.claims.finish([run.finished("lost", now, message)])
        self.claims.close()
        self._stopped.set()
        self._maintenance_wake.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.hook_pool.shutdown(wait=False)

    # -- one fire ---------------------------------------------------------------------------

    def run_fire(self, lane: Lane, fire: datetime) -> None:
        """Claim ``fire`` if this replica leads, start it at its instant, run the job."""
        term = self.leadership.current_term()
        (claimed,) = self.claims.claim([Fire(lane.spec.name, fire)], term, held=self._held)
        if claimed is None or term is None:
            return
        early = (fire - self.clock.now()).total_seconds()
        if early > 0:
            time.sleep(early)  # at most CLAIM_AHEAD: the claim was made ahead of the instant
        if self.leadership.current_term() is not term:
            # Lost (or stalled) between the claim and the instant: not run (at most once).
            self.claims.abandon(claimed, term)
            return
        started = self.claims.start(claimed, term)
        if started is not None:
            log = self.log.bind(
                job=lane.spec.name, scheduled_time=fire.isoformat(), token=term.token
            )
            self._run(lane, started, term, log)

    def _run(self, lane: Lane, run: RunRecord, term: Term, log: Any) -> None:
        ctx = JobContext(
            job=run.job,
            scheduled_time=run.scheduled_time,
            fencing_token=run.token,
            replica_id=self.replica_id,
            lost=term.lost,
            _deadline=term.lease_deadline,
            _clock=self.clock,
            _suspect=self.leadership.stall_reason,
        )
        metrics = self.metrics
        lateness = (run.started - run.scheduled_time).total_seconds()
        metrics.fire_lateness.labels(run.job).observe(max(lateness, 0.0))
        log.info("job_started", lateness=round(lateness, 4), isolation=lane.spec.isolation)
        lane.active, lane.active_ctx = run, ctx
        started = self.clock.monotonic()
        if lane.spec.isolation == "process":
            result = run_in_child(lane.spec.func, ctx, self._abort_grace())
            outcome, message = result.outcome, result.message
            if outcome == "error":
                log.error("job_failed", error=message)
        else:
            try:
                lane.spec.func(ctx)
            except LeadershipLost as exc:
                outcome, message = "lost", str(exc)
            except BaseException as exc:
                # Also sys.exit(), KeyboardInterrupt, GeneratorExit and other BaseExceptions:
                # in a pool thread they end only this run, never the lane or the replica.
                outcome, message = "error", describe_error(exc)
                log.exception("job_failed", error=message)
            else:
                outcome, message = "ok", ""
        duration = self.clock.monotonic() - started
        if lane.active is not run:
            return  # close() already recorded it as lost during shutdown
        lane.active, lane.active_ctx = None, None
        metrics.job_runs.labels(run.job, outcome).inc()
        metrics.job_duration.labels(run.job).observe(duration)
        log.info("job_finished", outcome=outcome, duration=round(duration, 4))
        self.claims.finish([run.finished(outcome, self.clock.now(), message)])

    def _abort_grace(self) -> float:
        """Seconds between SIGTERM and SIGKILL for a process job: a quarter of the time
        between giving up leadership and the lease's expiry, at most 1 s."""
        t = self.timings
        return max(0.05, min(1.0, (t.lease_ttl - t.renew_deadline) / 4))

    # -- leadership changes -----------------------------------------------------------------

    def _on_leadership(self, event: TermEvent) -> None:
        cluster, token = self.cluster, event.term.token
        if isinstance(event, TermStarted):
            if self.accepting:
                self.pool.submit(self.catch_up, event.term)
            acquired = hooks.LeadershipAcquiredEvent(cluster, self.replica_id, token)
            for hook in hooks.acquired_hooks():
                self.hook_pool.submit(self._call_hook, hook, acquired)
            return
        for lane in self.lanes.values():
            ctx = lane.active_ctx
            if ctx is not None and ctx.fencing_token == token and lane.spec.on_lost:
                self.hook_pool.submit(self._call_hook, lane.spec.on_lost, ctx)
        lost = hooks.LeadershipLostEvent(cluster, self.replica_id, token, event.reason)
        for lost_hook in hooks.lost_hooks():
            self.hook_pool.submit(self._call_hook, lost_hook, lost)
        if self.exit_on_lost and event.reason not in VOLUNTARY:
            self.hook_pool.submit(self._exit_after_loss, event.reason)

    def _call_hook(self, hook: Any, argument: object) -> None:
        try:
            hook(argument)
        except BaseException:  # a hook's sys.exit() too: never the end of the hook pool
            self.log.exception("hook_failed", hook=getattr(hook, "__qualname__", repr(hook)))

    def _exit_after_loss(self, reason: str) -> None:
        self.log.warning("exiting_on_lost", reason=reason, exit_status=EXIT_ON_LOST)
        self.stop_firing()
        # Process jobs are being aborted (SIGTERM, then SIGKILL after the grace): let that
        # finish so their outcome is recorded and no child outlives us.
        self.wait_idle(self._abort_grace() * 2 + 0.5)
        self.close()
        os._exit(EXIT_ON_LOST)

    # -- catch-up and maintenance -----------------------------------------------------------

    def catch_up(self, term: Term) -> dict[str, list[datetime]]:
        """Queue the fires ``term`` missed, per each job's ``catch_up`` policy.

        What to run is planned by :func:`scheduler.firing.catchup.plan`; this reads what the
        plan needs (history, claimed fires, the fires pauses skipped) and settles the
        unfinished runs of older terms it finds (:meth:`Claims.adopt`). One job's failure is
        logged (``catch_up_failed``) and never skips the others.

        Returns:
            The fires queued, by job (jobs with none left out).
        """
        queued: dict[str, list[datetime]] = {}
        if not self.leadership.controls.refresh():  # pauses set while this replica followed
            # Without them, a fire another leader skipped as paused would look missed
            # (scheduler.firing.pauses): catch up once they can be read (the maintenance loop).
            self.claims.skipped(term)
            return queued
        now = self.clock.now()
        for spec in self.specs:
            if not term.valid():
                return queued
            try:
                recent = self.backend.history(self.cluster, spec.name, ORPHAN_SCAN)
                self.claims.adopt(recent, term, now)
                window = catchup.claims_window(spec, recent, now)
                claimed: Collection[int] = frozenset()
                if window is not None:
                    claimed = self.backend.claimed(self.cluster, spec.name, *window)
                paused = self.claims.paused_fires(spec.name)
                missed = catchup.plan(spec, recent, claimed, paused, now)
            except BackendError as exc:
                self.log.warning("catch_up_failed", job=spec.name, error=str(exc))
                self.leadership.report(exc)
                continue
            except Exception as exc:  # one job's bug must not skip the catch-up of the rest
                error = f"{type(exc).__name__}: {exc}"
                self.log.error("catch_up_failed", job=spec.name, error=error)
                continue
            if not missed:
                continue
            self.log.info(
                "catch_up",
                job=spec.name,
                missed=len(missed),
                policy=spec.catch_up,
                fires=[f.isoformat() for f in missed][-10:],
            )
            self.lanes[spec.name].submit(missed)
            queued[spec.name] = missed
        return queued

    def settle_claims(self) -> Term | None:
        """Settle claims in doubt now (if the backend answers) and queue the fires settling
        hands back; what the maintenance loop does at each pass.

        Returns:
            The term that skipped fires while the backend did not answer and should catch
            up now, or ``None``.
        """
        settled = self.claims.settle()
        for fire in settled.fires:
            self.lanes[fire.job].submit([fire.at], fire.keep)
        return settled.catch_up

    def _maintenance_loop(self) -> None:
        """Store deferred outcomes and settle claims in doubt, whenever the backend answers."""
        while not self._stopped.is_set():
            self._maintenance_wake.wait(self.claims.next_pass())
            self._maintenance_wake.clear()
            self.claims.flush()
            if self.accepting:
                term = self.settle_claims()
                if term is not None:
                    self.catch_up(term)
