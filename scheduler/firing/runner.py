"""Fires -> leadership check -> claim -> run with a JobContext -> record the outcome.

Every replica runs APScheduler with the same triggers; a fire reaches :class:`Runner` through
:class:`LaneExecutor`. Only a replica in a valid leadership term claims it, and only a
successful claim (one atomic backend step that also checks the lease) runs the job.

Each job has a :class:`Lane`: its fires run one after another on this replica, so a job
never overlaps itself; a fire arriving while the job runs waits its turn (coalesced to the
newest one unless ``catch_up="all"``) and is skipped if it can no longer start within
``misfire_grace``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from scheduler.backends.base import LeaseBackend
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import BackendError, ClaimLost, FireNotDue, LeaseLost
from scheduler.errors import LeadershipLost as JobLeadershipLost
from scheduler.firing.claims import Attempts
from scheduler.firing.isolation import run_in_child
from scheduler.firing.pauses import PAUSED_FIRES_PREFIX, add_skipped, skipped_runs, was_skipped
from scheduler.firing.recovery import NEVER_STARTED, ORPHAN_MESSAGE, SETTLE_INTERVAL, Recovery
from scheduler.firing.runs import Retention, RunRecord, fire_key
from scheduler.jobs.context import JobContext
from scheduler.jobs.schedules import Ahead, fires_between
from scheduler.jobs.spec import JobSpec
from scheduler.leadership import hooks
from scheduler.leadership.elector import Elector, LeadershipAcquired, LeadershipLost, Term
from scheduler.leadership.members import PAUSE_PREFIX
from scheduler.ops.logs import get_logger

#: Newest runs per job a new leader inspects for runs left ``running`` by a dead leader.
ORPHAN_SCAN = 10

#: How long before a fire instant the leader claims it, so the claim's round trip to the
#: backend is not part of the job's lateness. The job still starts at the instant, after a
#: local (no network) re-check of leadership.
CLAIM_AHEAD = timedelta(milliseconds=25)

#: Exit status of a replica that exits because it lost leadership (``exit_on_lost``).
EXIT_ON_LOST = 3
#: Term-ending reasons that are the replica's own decision, not a loss to react to.
VOLUNTARY = ("shutdown", "resigned")

#: Seconds an attempt is remembered beyond twice the longest misfire_grace: room for wall
#: clock steps (a proposal that comes back after a step is still recognised).
ATTEMPT_MEMORY = 300.0

#: Seconds between attempts to store outcomes the backend could not take at the time.
FLUSH_RETRY = 1.0


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


class Lane:
    """The serial queue of fires for one job on this replica."""

    def __init__(self, spec: JobSpec, runner: Runner) -> None:
        self.spec = spec
        self._runner = runner
        self._lock = threading.Lock()
        self._pending: list[datetime] = []
        self._kept: set[datetime] = set()  # claims already made: never coalesced away
        self._busy = False
        self.idle = threading.Event()
        self.idle.set()
        self.active: RunRecord | None = None
        self.active_ctx: JobContext | None = None

    def submit(self, fires: Sequence[datetime], keep: bool = False) -> None:
        """Queue ``fires`` (deduplicated, in order); start draining if idle.

        ``keep``: the fires are claims already made (see :mod:`scheduler.firing.recovery`), run even
        where the job's policy coalesces a backlog to its newest fire.
        """
        with self._lock:
            incoming = {f.astimezone(UTC) for f in fires}
            if keep:
                self._kept |= incoming
            merged = sorted(set(self._pending) | incoming)
            if self.spec.catch_up != "all":
                merged = sorted({*merged[-1:], *(f for f in merged if f in self._kept)})
            self._pending = merged
            if self._busy or not merged:
                return
            self._busy = True
            self.idle.clear()
        try:
            self._runner.pool.submit(self._drain)
        except RuntimeError:  # the pool is shut down (replica closing): nobody will drain
            with self._lock:
                self._go_idle()

    def drop_pending(self) -> None:
        with self._lock:
            self._pending = []
            self._kept.clear()

    def _go_idle(self) -> None:
        """Forget queued fires and mark the lane idle (with ``_lock`` held)."""
        self._pending = []
        self._kept.clear()
        self._busy = False
        self.idle.set()

    def _drain(self) -> None:
        # The lane outlives any one fire: nothing a fire raises (a job's sys.exit() is
        # recorded by Runner._run; anything else is a bug, logged here) reaches the pool's
        # worker, and the lane never stays busy with nobody draining it.
        idle = False
        try:
            while True:
                with self._lock:  # idle in the same step as the check: no fire slips by
                    if not self._pending or not self._runner.accepting:
                        self._go_idle()
                        idle = True
                        return
                    fire = self._pending.pop(0)
                    self._kept.discard(fire)
                try:
                    self._runner.run_fire(self, fire)
                except BaseException:
                    self._runner.log.exception("fire_failed", job=self.spec.name)
        finally:
            if not idle:  # the lane's own bookkeeping raised: free it all the same
                with self._lock:
                    self._go_idle()


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
        elector: tells whether (and under which term) this replica leads.
        backend: where fires are claimed and outcomes recorded.
        cluster: election name, the namespace of the run history.
        history_limit: runs kept per job.
        clock: wall clock for fire instants, monotonic for deadlines.
        exit_on_lost: exit the process (status 3) after the abort hooks when leadership is
            lost involuntarily, as client-go users do by hand; Kubernetes restarts it.
    """

    def __init__(
        self,
        specs: Sequence[JobSpec],
        elector: Elector,
        backend: LeaseBackend,
        cluster: str,
        history_limit: int = 100,
        clock: Clock = SYSTEM_CLOCK,
        exit_on_lost: bool = False,
    ) -> None:
        self.specs = list(specs)
        self.exit_on_lost = exit_on_lost
        self.elector = elector
        self.backend = backend
        self.cluster = cluster
        self.history_limit = history_limit
        self.clock = clock
        self.replica_id = elector.holder.replica_id
        self.log = get_logger(replica=self.replica_id)
        self.lanes = {spec.name: Lane(spec, self) for spec in self.specs}
        self.pool = ThreadPoolExecutor(
            max_workers=max(4, len(self.specs) + 2), thread_name_prefix="baton-job"
        )
        self.accepting = True
        # One attempt per fire per term (scheduler.firing.claims); kept well past any grace.
        longest_grace = max((spec.misfire_grace for spec in self.specs), default=0.0)
        self.attempts = Attempts(clock.monotonic, keep=2 * longest_grace + ATTEMPT_MEMORY)
        self._held = False  # no new fire while a resign is under way
        # Hooks (job on_lost, process-wide leadership hooks) run here, one at a time, so a
        # slow hook never delays the election.
        self.hook_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-hooks")
        self._unsaved: list[RunRecord] = []
        self._unsaved_lock = threading.Lock()
        # Fires skipped as paused and not yet recorded in the backend (scheduler.firing.pauses); the
        # lock also keeps this replica's read-modify-writes of those records apart.
        self._paused_unsaved: dict[str, set[datetime]] = {}
        self._paused_lock = threading.Lock()
        # Wakes the maintenance loop: outcomes to store, claims to settle (firing.recovery).
        self._maintenance_wake = threading.Event()
        self._stopped = threading.Event()
        self._maintenance: threading.Thread | None = None
        self._scheduler = BackgroundScheduler(timezone=UTC)
        self._scheduler.add_executor(LaneExecutor(self), alias="baton")
        elector.add_listener(self._on_leadership)
        self.recovery = Recovery(
            {spec.name: spec for spec in self.specs},
            elector,
            backend,
            cluster,
            clock,
            lambda job, fire, keep: self.lanes[job].submit([fire], keep),
            self.log,
            self._maintenance_wake,
        )
        elector.on_backend_ok(self._maintenance_wake.set)

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

    def loop_problem(self) -> str | None:
        """Why this runner has stopped working (/healthz), or ``None``.

        The fire loop or the maintenance loop is not running, or a job or hook pool lost a
        thread or was shut down: fires would queue behind it for ever.
        """
        # APScheduler 3 keeps its loop thread private; a dead thread is a dead scheduler.
        thread = getattr(self._scheduler, "_thread", None)
        if not self._scheduler.running or thread is None or not thread.is_alive():
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
                self._save(run.finished("lost", now, "replica shut down before the run ended"))
        self.recovery.withdraw_all()
        self._flush()
        self._stopped.set()
        self._maintenance_wake.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.hook_pool.shutdown(wait=False)

    # -- one fire ---------------------------------------------------------------------------

    def run_fire(self, lane: Lane, fire: datetime) -> None:
        """Claim ``fire`` if this replica leads, start it at its instant, run the job."""
        spec = lane.spec
        term = self.elector.current_term()
        # An attempt recovery settled (scheduler.firing.recovery): sent again, or run as found.
        handover = self.recovery.take_handover(spec.name, fire, term)
        if handover is not None and self.attempts.started(handover.run.attempt):
            handover = None  # raced its own first run (the lane ran it meanwhile)
        if term is None or self._held:
            if handover is not None:
                self.recovery.doubt(handover.run)  # not now: settled again (given back)
            return  # followers see every fire too; only the leader acts
        late = (self.clock.now() - fire).total_seconds()
        log = self.log.bind(job=spec.name, scheduled_time=fire.isoformat(), token=term.token)
        if handover is None or handover.resend:
            claimed = self._claim_fire(
                spec, fire, term, late, log, handover.run if handover else None
            )
            if claimed is None:
                return
        elif late > spec.misfire_grace:
            log.warning("fire_missed", late_by=round(late, 3), misfire_grace=spec.misfire_grace)
            lost = handover.run.finished("lost", self.clock.now(), "claim confirmed too late")
            self._save(lost)
            return
        else:
            claimed = handover.run
        early = (fire - self.clock.now()).total_seconds()
        if early > 0:
            time.sleep(early)  # at most CLAIM_AHEAD: the claim was made ahead of the instant
        if self.elector.current_term() is not term:
            # Lost (or stalled) between the claim and the instant: not run (at most once).
            # The claim goes back once the backend confirms it is ours, so that whoever leads
            # can still run the fire.
            log.warning("fire_abandoned", reason="leadership lost before the start")
            self.recovery.doubt(claimed)
            return
        started = self._start(claimed, term, log)
        if started is not None:
            self._run(lane, started, term, log)

    def _start(self, claimed: RunRecord, term: Term, log: Any) -> RunRecord | None:
        """Mark ``claimed`` started in the backend (fenced by the lease); ``None``: not run.

        The attempt counts as started here (:meth:`Attempts.start`) only once the backend
        has stored it so and the job is about to be called: an attempt whose start was
        refused or unanswered goes back to recovery, which may hand it over again.
        """
        if self.attempts.started(claimed.attempt):
            log.error("fire_already_started", attempt=claimed.attempt)
            return None
        started: RunRecord | None = None
        if claimed.outcome == "running":
            # Adopted after a start whose answer was lost: stored as started, never run.
            started = replace(claimed, started=self.clock.now())
        else:
            try:
                started = self.backend.start(term.lease, claimed.started_now(self.clock.now()))
            except LeaseLost as exc:
                log.warning("fire_abandoned", reason=f"lease lost before the start: {exc.reason}")
                self.elector.lease_lost(term, exc.reason)
                self.recovery.doubt(claimed)  # still claimed: given back once settled
            except ClaimLost as exc:
                log.error("claim_lost", reason=exc.reason)
            except BackendError as exc:
                # The start may have landed. Not run now; settled once the backend answers
                # (run in this term, or recorded lost: a started fire is never given back).
                self.elector.backend_ok = False
                log.warning("start_failed", error=str(exc))
                self.elector.report(exc)  # refused for good: leadership ends, logged once
                self.recovery.doubt(claimed)
                self.recovery.skipped(term)
        if started is None or not self.attempts.start(claimed.attempt):
            return None
        return started

    def _claim_fire(
        self,
        spec: JobSpec,
        fire: datetime,
        term: Term,
        late: float,
        log: Any,
        resend: RunRecord | None = None,
    ) -> RunRecord | None:
        """The claim of ``fire`` under ``term``, or ``None`` (not ours to run).

        ``resend``: the term's attempt at this fire whose answer was lost and whose record
        was not found; it is sent again as it was (idempotent), not as a new attempt.
        """
        if PAUSE_PREFIX + spec.name in self.elector.controls:
            log.info("fire_paused")
            # Recorded, so that no leader's catch-up runs it after the resume.
            self._record_paused(spec.name, fire)
            return None
        if not self.elector.backend_ok:
            # A call went unanswered: claim nothing until a renewal confirms the backend
            # (a claim in the dark could only be lost). Skipped fires are caught up once it
            # answers, by this term or whoever leads next.
            log.warning("fire_skipped", reason="backend unconfirmed since a failed call")
            if resend is not None:
                self.recovery.doubt(resend)
            self.recovery.skipped(term)
            return None
        if late > spec.misfire_grace:
            log.warning("fire_missed", late_by=round(late, 3), misfire_grace=spec.misfire_grace)
            if resend is not None:
                self.recovery.doubt(resend)  # recorded lost if it landed after all
            return None
        if resend is not None:
            run = resend
        elif self.attempts.first(term.token, spec.name, fire):
            run = RunRecord(
                job=spec.name,
                scheduled_time=fire,
                replica_id=self.replica_id,
                token=term.token,
                started=self.clock.now(),
            )
        else:
            # Proposed again in this term (the trigger and a catch-up, a clock step): one
            # attempt per fire per term (scheduler.firing.claims).
            log.info("fire_already_attempted")
            self.elector.metrics.claims.labels("already_attempted").inc()
            return None
        retention = Retention(limit=self.history_limit, protect=spec.misfire_grace * 2)
        claims = self.elector.metrics.claims
        try:
            claimed = self._claim(term, run, retention, spec.misfire_grace, log)
        except LeaseLost as exc:
            claims.labels("lease_lost").inc()
            log.warning("claim_refused", reason=exc.reason)
            self.elector.lease_lost(term, exc.reason)
            return None
        except BackendError as exc:
            # No answer: the claim may have landed all the same. Not run now; settled once
            # the backend answers (run late, or given back).
            claims.labels("error").inc()
            self.elector.backend_ok = False
            log.warning("claim_failed", error=str(exc))
            self.elector.report(exc)  # refused for good: leadership ends, logged once
            self.recovery.doubt(run)
            self.recovery.skipped(term)
            return None
        if claimed is None:
            claims.labels("duplicate").inc()
            log.info("fire_already_claimed")
            return None
        if claimed.outcome != "claimed":
            # A resend answered with this attempt's record already started or ended: its
            # earlier send and start landed unanswered. Settled as a doubt (never run twice).
            self.recovery.doubt(run)
            return None
        claims.labels("claimed").inc()
        self.recovery.claimed(claimed)
        return claimed

    def _claim(
        self, term: Term, run: RunRecord, retention: Retention, grace: float, log: Any
    ) -> RunRecord | None:
        """Claim ``run``; if the backend's clock says it is not due yet (this replica's clock
        runs ahead), wait by the backend's clock and try again, within ``grace``."""
        waited = 0.0
        while True:
            try:
                return self.backend.claim(term.lease, run, retention)
            except FireNotDue as exc:
                if waited + exc.wait > grace or self.elector.current_term() is not term:
                    log.warning("fire_not_due_given_up", waited=round(waited, 3))
                    return None
                log.warning("fire_not_due", wait=round(exc.wait, 3), detail="clock ahead")
                time.sleep(exc.wait)
                waited += exc.wait

    def _run(self, lane: Lane, run: RunRecord, term: Term, log: Any) -> None:
        ctx = JobContext(
            job=run.job,
            scheduled_time=run.scheduled_time,
            fencing_token=run.token,
            replica_id=self.replica_id,
            lost=term.lost,
            _deadline=term.lease_deadline,
            _clock=self.clock,
            _suspect=self.elector.stall_reason,
        )
        metrics = self.elector.metrics
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
            except JobLeadershipLost as exc:
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
        self._save(run.finished(outcome, self.clock.now(), message))

    # -- catch-up after an election -----------------------------------------------------------

    def _abort_grace(self) -> float:
        """Seconds between SIGTERM and SIGKILL for a process job: a quarter of the time
        between giving up leadership and the lease's expiry, at most 1 s."""
        t = self.elector.timings
        return max(0.05, min(1.0, (t.lease_ttl - t.renew_deadline) / 4))

    def _on_leadership(self, event: LeadershipAcquired | LeadershipLost) -> None:
        cluster, token = self.cluster, event.term.token
        if isinstance(event, LeadershipAcquired):
            if self.accepting:
                self.pool.submit(self._catch_up, event.term)
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

    def _catch_up(self, term: Term) -> None:
        """Queue fires that fell due within ``misfire_grace`` and that nobody claimed.

        ``all``: every unclaimed fire of the look-back window after its earliest claim, oldest
        first (also holes before a newer claim: a previous leader may have lost its term
        part-way through its own backlog). ``latest``: the newest unclaimed fire after the
        newest claim, if any (an older hole is superseded by the later run). A job with no
        history at all has missed nothing: a cold start does not replay the past.
        """
        if not self.elector.refresh_controls():  # pauses set while this replica followed
            # Without them, a fire another leader skipped as paused would look missed
            # (scheduler.firing.pauses): catch up once they can be read (the maintenance loop).
            self.recovery.skipped(term)
            return
        now = self.clock.now()
        for spec in self.specs:
            if not term.valid():
                return
            try:
                recent = self.backend.history(self.cluster, spec.name, ORPHAN_SCAN)
                self._close_orphans(recent, term, now)
                if spec.catch_up == "none" or not recent:
                    continue
                missed = self._missed(spec, recent[0].scheduled_time, now)
            except BackendError as exc:
                self.log.warning("catch_up_failed", job=spec.name, error=str(exc))
                self.elector.report(exc)
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

    def _missed(self, spec: JobSpec, newest_claim: datetime, now: datetime) -> list[datetime]:
        """Unclaimed fires of ``spec`` to run now, per its ``catch_up`` policy."""
        start = now - timedelta(seconds=spec.misfire_grace)
        # Up to CLAIM_AHEAD past now: APScheduler handed this replica those fires early,
        # while it did not lead yet, so it dropped them; the lane waits for their instant.
        due = fires_between(spec.trigger, start, now + CLAIM_AHEAD)
        # A fire a leader skipped because the job was paused was handled, as a claimed one
        # was: never missed, so never run later (scheduler.firing.pauses).
        runs = skipped_runs(self.elector.controls.get(PAUSED_FIRES_PREFIX + spec.name))
        with self._paused_lock:
            unsaved = set(self._paused_unsaved.get(spec.name, ()))
        paused = {fire_key(f) for f in due if f in unsaved or was_skipped(runs, f)}
        if spec.catch_up == "latest":
            handled = max([newest_claim, *(f for f in due if fire_key(f) in paused)])
            return [f for f in due if f > handled][-1:]
        if not due:
            return []
        handled_keys = self.backend.claimed(self.cluster, spec.name, due[0], due[-1]) | paused
        # Holes count from the earliest fire handled: fires before any are the time before
        # this job ever ran, which a cold start does not replay.
        anchor = min(handled_keys) if handled_keys else fire_key(newest_claim)
        return [f for f in due if fire_key(f) > anchor and fire_key(f) not in handled_keys]

    # -- fires skipped as paused ----------------------------------------------------------------

    def _record_paused(self, job: str, fire: datetime) -> None:
        """Add ``fire`` to ``job``'s record of fires skipped as paused (scheduler.firing.pauses)."""
        with self._paused_lock:
            self._paused_unsaved.setdefault(job, set()).add(fire.astimezone(UTC))
        self._flush_paused(job)

    def _flush_paused(self, job: str) -> None:
        """Write ``job``'s unsaved skipped fires to the backend; kept for a retry on failure."""
        spec = self.lanes[job].spec
        key = PAUSED_FIRES_PREFIX + job
        with self._paused_lock:
            fires = set(self._paused_unsaved.get(job, ()))
            if not fires:
                return
            # Past the catch-up look-back, with the margin attempts keep for clock steps.
            horizon = self.clock.now() - timedelta(seconds=2 * spec.misfire_grace + ATTEMPT_MEMORY)
            try:
                current = self.backend.controls(self.cluster).get(key)
                value = add_skipped(
                    current, fires, lambda f: spec.trigger.get_next_fire_time(f, f), horizon
                )
                self.backend.set_control(self.cluster, key, value)
            except BackendError as exc:
                # Retried by the maintenance loop (within FLUSH_RETRY) and the next skip.
                self.log.warning("paused_fires_record_deferred", job=job, error=str(exc))
                return
            left = self._paused_unsaved[job] - fires
            if left:
                self._paused_unsaved[job] = left
            else:
                del self._paused_unsaved[job]

    def _close_orphans(self, recent: list[RunRecord], term: Term, now: datetime) -> None:
        """Settle the unfinished runs of older terms among ``recent``.

        ``running``: its replica died (or was deposed) mid-run and will never record an end,
        so it is marked ``lost`` (if it was only paused and does finish, its own ``finish``
        overwrites this with the real outcome). ``claimed``: never started, and now never
        will be (``start`` is fenced by the lease this term holds); its claimant may still
        give it back, and :class:`~scheduler.firing.recovery.Recovery` runs the fire if so while
        within misfire_grace; a claim the job would not run any more is marked ``lost``.
        """
        for run in recent:
            if run.token >= term.token:
                continue
            if run.outcome == "claimed" and not self.recovery.suspect(run, term):
                self._save(run.finished("lost", now, NEVER_STARTED))
            if run.outcome == "running":
                self.log.warning(
                    "run_orphaned",
                    job=run.job,
                    scheduled_time=run.scheduled_time.isoformat(),
                    token=run.token,
                    replica_of_run=run.replica_id,
                )
                self._save(run.finished("lost", now, ORPHAN_MESSAGE))

    # -- history that must not be lost --------------------------------------------------------

    def _save(self, run: RunRecord) -> None:
        try:
            self.backend.finish(self.cluster, run)
        except BackendError as exc:
            self.log.warning("history_write_deferred", job=run.job, error=str(exc))
            self.elector.report(exc)
            with self._unsaved_lock:
                self._unsaved.append(run)
            self._maintenance_wake.set()

    def _flush(self) -> None:
        with self._unsaved_lock:
            pending, self._unsaved = self._unsaved, []
        for index, run in enumerate(pending):
            try:
                self.backend.finish(self.cluster, run)
            except BackendError:
                with self._unsaved_lock:
                    self._unsaved[:0] = pending[index:]
                return

    def _maintenance_loop(self) -> None:
        """Store deferred outcomes and settle claims in doubt, whenever the backend answers."""
        while not self._stopped.is_set():
            pending = self.recovery.pending()
            self._maintenance_wake.wait(SETTLE_INTERVAL if pending else FLUSH_RETRY)
            self._maintenance_wake.clear()
            if self._unsaved:
                self._flush()
            if self._paused_unsaved and self.elector.backend_ok:
                for job in list(self._paused_unsaved):
                    self._flush_paused(job)
            if self.recovery.pending() and self.elector.backend_ok and self.accepting:
                term = self.recovery.settle()
                if term is not None:
                    self._catch_up(term)
