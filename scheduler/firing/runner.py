"""The assembly: fire loop, lanes and execution: fires in, jobs run, outcomes out.

Every replica runs the fire loop (:class:`~scheduler.firing.fireloop.FireLoop`) over the same
triggers; it hands each instant's fires to their jobs' :class:`~scheduler.firing.lanes.Lane`
together, ahead of the instant by the time their claims take, and a lane keeps a job from
overlapping itself on a replica. From the lane a fire flows one way, in batches:

1. **claim**: the lane hands its next fire to the claim gatherer
   (:class:`~scheduler.firing.batching.Gatherer`, one thread), which collects the fires
   arriving together (every job due at one instant) and has the claims layer
   (:class:`~scheduler.firing.claims.Claims`) claim them in one backend call, if this
   replica leads, before the instant;
2. **start**: the claimed batch waits in the timetable
   (:class:`~scheduler.firing.batching.Timetable`, one thread) until its instant, and is
   started there in calls of ``START_SLICE`` fires (fenced by the lease);
3. **run**: each started fire runs on a worker of the job pool, a bounded
   ``ThreadPoolExecutor(max_workers)`` shared by every job (a process job's worker waits
   for its child); its outcome is queued and the maintenance loop stores the queue in
   batches; then the lane hands over its next fire.

So however many jobs there are, the runner's threads are the pool's ``max_workers`` plus
the fire loop, the claim and start threads, the maintenance loop and the hook thread.

Steps 1 and 2 are :class:`~scheduler.firing.dispatch.Dispatch`, step 3
:class:`~scheduler.firing.execution.Execution`; this module is the assembly, shutdown and
the reactions to leadership changes.

A new leader catches up the fires nobody ran (:mod:`scheduler.firing.catchup` plans them,
from one ranged read of every job's history); the maintenance loop stores outcomes, settles
claims in doubt, queues the fires settling hands back, and writes the burst summary
(:class:`~scheduler.firing.tally.Tally`). Leadership is seen through a narrow view
(:class:`~scheduler.leadership.view.Leadership`), never the elector itself.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.backends.runs import RunRecord
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.firing.catchup import CLAIM_AHEAD, ORPHAN_SCAN
from scheduler.firing.claims import Claims
from scheduler.firing.coroutines import Coroutines
from scheduler.firing.dispatch import Dispatch
from scheduler.firing.execution import Execution, abort_grace, describe_error, pool_problem
from scheduler.firing.fireloop import FireLoop, Pace
from scheduler.firing.lanes import Idleness, Lane
from scheduler.firing.takeover import Takeover
from scheduler.firing.tally import SkipReason
from scheduler.jobs.spec import JobSpec
from scheduler.leadership import hooks
from scheduler.leadership.events import TermEvent, TermStarted
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.leadership.view import Leadership
from scheduler.ops.logs import get_logger
from scheduler.ops.metrics import Metrics

__all__ = [
    "CLAIM_AHEAD",
    "DEFAULT_MAX_WORKERS",
    "EXIT_ON_LOST",
    "ORPHAN_SCAN",
    "Runner",
    "describe_error",
]

#: Exit status of a replica that exits because it lost leadership (``exit_on_lost``).
EXIT_ON_LOST = 3
#: Term-ending reasons that are the replica's own decision, not a loss to react to.
VOLUNTARY = ("shutdown", "resigned")
#: Worker threads of the job pool unless configured (``max_workers``): how many jobs run
#: at once on this replica. APScheduler 3's default is 10; Quartz's 10 as well.
DEFAULT_MAX_WORKERS = 32


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
        max_workers: worker threads of the job pool: the most jobs running at once (a
            process job holds a worker while its child runs). More fires due than workers
            free wait for one (their lateness shows it); see the ``max_workers`` setting.
        loop: the event loop ``async def`` jobs run on (the host application's, when
            embedded); ``None``: Baton's own loop thread, started only if a job is async.
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
        max_workers: int = DEFAULT_MAX_WORKERS,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.specs = list(specs)
        #: Where ``async def`` jobs run (scheduler.firing.coroutines); None without any.
        self.coroutines = Coroutines(loop) if any(spec.is_async for spec in self.specs) else None
        self.exit_on_lost = exit_on_lost
        self.leadership = leadership
        self.backend = backend
        self.cluster = cluster
        self.clock = clock
        self.replica_id = replica_id
        self.timings = timings
        self.metrics = metrics or Metrics()
        self.log = get_logger(replica=replica_id)
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="baton-job")
        self.accepting = True
        # Hooks (job on_lost, process-wide leadership hooks) run here, one at a time, so a
        # slow hook never delays the election.
        self.hook_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="baton-hooks")
        # Wakes the maintenance loop: outcomes the backend refused, claims to settle, a
        # burst to summarise.
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
        self.tally = self.claims.tally
        #: Runs started fires on the job pool (scheduler.firing.execution).
        self._execution = Execution(
            self.pool,
            self.claims,
            leadership,
            lambda: self.accepting,
            replica_id=replica_id,
            timings=timings,
            metrics=self.metrics,
            clock=clock,
            log=self.log,
            coroutines=self.coroutines,
        )
        #: How far ahead of its instant a burst is handed over (claims time it).
        self.pace = Pace()
        #: Claims and starts the lanes' fires in batches (scheduler.firing.dispatch).
        self._dispatch = Dispatch(
            self.claims,
            leadership,
            self._execution,
            lambda: self.accepting,
            clock,
            self.log,
            pace=self.pace,
        )
        # One of each callable and one Idleness for every lane (10,000 lanes: 10,000 each).
        put, skipped, idleness = self._dispatch.put, self._dispatch.skipped, Idleness()

        def accepting() -> bool:
            return self.accepting

        self.lanes = {
            spec.name: Lane(spec, put, skipped, accepting, idleness) for spec in self.specs
        }
        self._takeover = Takeover(
            self.specs,
            leadership,
            backend,
            cluster,
            self.claims,
            lambda job, fires: self.lanes[job].submit(fires),
            clock,
            self.log,
            unhanded=lambda job: self._loop.unhanded(job),
        )
        #: Hands every job's fires to its lane ahead of their instants (every replica).
        self._loop = FireLoop(
            {spec.name: spec.trigger for spec in self.specs},
            self._hand_over,
            clock,
            self.pace,
            self.log,
        )
        leadership.add_listener(self._on_leadership)
        leadership.on_backend_ok(self._maintenance_wake.set)

    def start(self) -> None:
        """Start the fire loop (on every replica, leader or not)."""
        if self.coroutines is not None:
            self.coroutines.start()
        self._dispatch.start()
        self._loop.start()
        self._maintenance = threading.Thread(
            target=self._maintenance_loop, name="baton-maintenance", daemon=True
        )
        self._maintenance.start()

    def threads(self) -> dict[str, threading.Thread]:
        """The runner's loop threads by role (``fire loop``, ``claims``, ``starts``,
        ``outcomes``, ``maintenance``), once started.

        Each must stay alive while the runner runs (:meth:`loop_problem` says when one has
        died); for diagnostics.
        """
        found: dict[str, threading.Thread] = {}
        if self._loop.thread.ident is not None:
            found["fire loop"] = self._loop.thread
        found.update(self._dispatch.threads())
        if self.claims.saver.ident is not None:
            found["outcomes"] = self.claims.saver
        if self._maintenance is not None:
            found["maintenance"] = self._maintenance
        return found

    def wake(self) -> None:
        """Make the fire loop and the maintenance loop look again now (harmless any time)."""
        self._loop.wake()
        self._maintenance_wake.set()

    def loop_problem(self) -> str | None:
        """Why this runner has stopped working (/healthz), or ``None``.

        The fire loop, the claim or start thread or the maintenance loop is not running, or
        a job or hook pool lost a thread or was shut down: fires would queue behind it for
        ever.
        """
        threads = self.threads()
        loop = threads.get("fire loop")
        if loop is None or not loop.is_alive() or not self._loop.running:
            return "scheduler loop is not running"
        if not self._stopped.is_set():
            for role in ("claims", "starts", "outcomes", "maintenance"):
                thread = threads.get(role)
                if thread is not None and not thread.is_alive():
                    return f"{role} loop is not running"
        if self.coroutines is not None and (problem := self.coroutines.problem()):
            return problem
        return pool_problem(self.pool, "job pool") or pool_problem(self.hook_pool, "hook pool")

    def hold_fires(self, held: bool) -> None:
        """Start no new fire while ``held`` (a graceful resign in progress)."""
        self._dispatch.held = held

    def stop_firing(self) -> None:
        """Start no new fire from now on; running jobs go on.

        Fires queued in lanes, gathered for a claim, claimed and waiting for their instant,
        or started and waiting for a worker are dropped, each counted
        (:attr:`~scheduler.firing.tally.SkipReason.SHUTDOWN`; a started one is recorded
        ``lost``, a claimed one given back): only jobs already running are waited for.
        """
        self.accepting = False
        dropped: list[str] = []
        for lane in self.lanes.values():
            dropped += [lane.spec.name] * len(lane.drop_pending())
        self.tally.skipped(SkipReason.SHUTDOWN, dropped)
        self._dispatch.hurry()  # claimed fires waiting for their instant: abandoned now
        self._loop.stop()

    def wait_idle(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for running jobs; True if all have finished."""
        deadline = self.clock.monotonic() + timeout
        for lane in self.lanes.values():
            if not lane.idle.wait(max(0.0, deadline - self.clock.monotonic())):
                return False
        return True

    def close(self) -> None:
        """Record still-running jobs as lost, store unsaved outcomes (bounded), stop threads."""
        self.accepting = False
        now = self.clock.now()
        lost: list[RunRecord] = []
        for lane in self.lanes.values():
            run = lane.active
            if run is not None:
                lane.active = None
                lost.append(run.finished("lost", now, "replica shut down before the run ended"))
        if lost:
            self.claims.finish(lost)
        self._dispatch.stop()
        self.claims.close()
        self._stopped.set()
        self._maintenance_wake.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.hook_pool.shutdown(wait=False)
        if self.coroutines is not None:
            self.coroutines.close()

    def _hand_over(self, fires: list[tuple[str, datetime]]) -> None:
        """The fire loop's fires: each to its job's lane."""
        lanes = self.lanes
        for job, instant in fires:
            lanes[job].submit((instant,))

    # -- leadership changes -----------------------------------------------------------------

    def _on_leadership(self, event: TermEvent) -> None:
        cluster, token = self.cluster, event.term.token
        if isinstance(event, TermStarted):
            if self.accepting:
                # Its own short-lived thread: the job pool may be full of long jobs, and the
                # catch-up must not wait for one of them to end (one per election).
                threading.Thread(
                    target=self._catch_up_safely,
                    args=(event.term,),
                    name="baton-catch-up",
                    daemon=True,
                ).start()
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
        self.wait_idle(abort_grace(self.timings) * 2 + 0.5)
        self.close()
        os._exit(EXIT_ON_LOST)

    # -- catch-up and maintenance -----------------------------------------------------------

    def catch_up(self, term: Term) -> dict[str, list[datetime]]:
        """Queue the fires ``term`` missed, per each job's ``catch_up`` policy, and settle
        the runs older terms left unfinished (:class:`~scheduler.firing.takeover.Takeover`).

        Returns:
            The fires queued, by job (jobs with none left out).
        """
        return self._takeover.run(term)

    def _catch_up_safely(self, term: Term) -> None:
        try:
            self.catch_up(term)
        except BaseException:  # a bug must not pass silently on a bare thread
            self.log.exception("catch_up_failed", token=term.token)

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
        """Store queued outcomes, settle claims in doubt when due, write burst summaries."""
        while not self._stopped.is_set():
            self._maintenance_wake.wait(self.claims.next_pass())
            self._maintenance_wake.clear()
            self.claims.flush()
            if self.accepting:
                term = self.settle_claims()
                if term is not None:
                    self.catch_up(term)
            self.tally.summarise()
