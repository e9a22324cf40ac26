"""A fire's fate: claimed, confirmed, in doubt, withdrawn or adopted; started; its outcome kept.

A fire flows one way: trigger -> runner -> claims -> backend -> job -> claims (outcome). The
runner hands :class:`Claims` the fires due and gets back the claims to start; at the instant
it asks :meth:`Claims.start`; it hands back the outcome (:meth:`Claims.finish`). Everything
in between stays here: the attempt ledger (below), claims left in doubt and the fires a
deposed leader gave back (:mod:`scheduler.firing.recovery`, settled by :meth:`Claims.settle`,
which *returns* the fires to queue instead of calling the runner), outcomes the backend
could not take yet (:mod:`scheduler.firing.outcomes`) and the fires skipped as paused
(:mod:`scheduler.firing.pauses`). The API takes batches (every fire due at one instant, many
outcomes); each item is still sent in its own backend call.

**The rule.** In one leadership term a replica makes at most one claim *attempt* per fire
(job, instant); whatever proposes the fire again in that term — APScheduler's trigger, the
catch-up after an election or an outage, a lane's backlog, :mod:`scheduler.firing.recovery` — is
dropped (``fire_already_attempted``). The only repeat is a *resend* of the same attempt
(same :attr:`~scheduler.firing.runs.RunRecord.attempt`) by recovery after the first send went
unanswered, which every backend answers idempotently. :class:`Attempts` is that ledger.

**One clock proposes fires.** The trigger and the catch-up both name instants on this
replica's wall clock (:meth:`Clock.now`, APScheduler reads the same system clock): the
backend's clock is not read per proposal, because SQLite has none, ZooKeeper exposes none,
and a read per fire would add a round trip to every tick. The two paths still see that clock
at different moments — APScheduler computes its wait before a clock step and wakes after
it, the catch-up plans from the stepped clock — so a stepped clock can make both propose the
same instant. The ledger makes that harmless: the second proposal is dropped locally, and
were it ever sent, it is a different attempt that neither claims nor gives back the first's
record. (Chaos finding F11: a replica whose clock was 5 s behind ran tick t from its
catch-up, then its trigger claimed t again in the same term; that claim went unanswered and,
once settled, was withdrawn by token — deleting the record of the run that had happened.)

**Invariants: no path makes a started fire look unclaimed, or a claimed one look free.**

* *Claim identity* — ``start``, ``finish`` and ``unclaim`` act only on the record of their
  own attempt (see :mod:`scheduler.backends.base`).
* *Give-back* (``unclaim``: an answer that came too late, ``fire_abandoned``, a confirmed
  claim whose term ended, shutdown) deletes only a ``claimed`` record of its attempt, in one
  atomic step; a fire whose ``start`` landed can never be given back, whatever the claimant
  believes.
* *Start* is fenced by the lease: a ``claimed`` record of a term that is over can never
  start, so a new leader may rely on it staying unstarted (it watches such claims, and runs
  the fire if the claimant gives it back, see :mod:`scheduler.firing.recovery`).
* *Adoption by a new leader* — a ``running`` record of an older term is marked ``lost``,
  never run again; a ``claimed`` one stays claimed until its claimant gives it back or
  misfire_grace passes (then it is marked ``lost``). Neither is deleted by the new leader.
* *History trimming* deletes only finished records (``ok``/``error``/``lost``), beyond the
  retention limit and older than twice ``misfire_grace`` before the fire being claimed, which
  is further back than any catch-up looks.
* *The data-loss epoch* (Redis) refuses, after a loss of data, every fire that could have
  been claimed in the lost data (fires up to the loss plus the claim allowance): a fire
  whose record was lost is never claimed again. Its limit, documented in
  :mod:`scheduler.backends.redis`, is a data loss with no surviving replica that saw the
  last token and a server clock stepped back.
* *Shutdown* gives back only claims in doubt or adopted and never started; a running job's
  record is finished ``lost``, not deleted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.clock import Clock
from scheduler.errors import BackendError, ClaimLost, FireNotDue, LeaseLost
from scheduler.firing.outcomes import FLUSH_RETRY, Outcomes
from scheduler.firing.pauses import PausedFires, PauseRecords, skipped_runs
from scheduler.firing.recovery import (
    NEVER_STARTED,
    ORPHAN_MESSAGE,
    SETTLE_INTERVAL,
    Fire,
    Recovery,
    Settled,
)
from scheduler.firing.runs import Retention, RunRecord, fire_key
from scheduler.jobs.spec import JobSpec
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.leadership.view import Leadership
from scheduler.ops.metrics import Metrics

__all__ = ["ATTEMPT_MEMORY", "Attempts", "Claims", "Fire", "Settled"]

Key = tuple[str, int]

#: Seconds an attempt is remembered beyond twice the longest misfire_grace: room for wall
#: clock steps (a proposal that comes back after a step is still recognised).
ATTEMPT_MEMORY = 300.0


class Attempts:
    """The fires this replica has attempted in its current term.

    Thread-safe (lanes of different jobs call it concurrently). Entries are forgotten when
    the term changes and, within a long term, ``keep`` seconds (monotonic) after they were
    made: by then the fire is far past its ``misfire_grace`` and no path proposes it.

    Args:
        monotonic: the clock entries age on.
        keep: seconds an entry is kept; at least the longest ``misfire_grace`` plus the
            longest wall-clock step the deployment should tolerate.
    """

    def __init__(self, monotonic: Callable[[], float], keep: float) -> None:
        self._monotonic = monotonic
        self._keep = keep
        self._lock = threading.Lock()
        self._token: int | None = None
        self._made: dict[Key, float] = {}  # fire -> monotonic time of the term's attempt
        # Attempts whose job this replica started, across terms: the last guard against
        # running one twice (a resend or an adoption that raced the first run).
        self._started: dict[str, float] = {}
        self._next_prune = 0.0

    def first(self, token: int, job: str, fire: datetime) -> bool:
        """Record an attempt at (``job``, ``fire``) in term ``token``.

        Returns:
            ``True`` if this is the term's first attempt at the fire (send the claim);
            ``False`` if the term attempted it already (drop the proposal).
        """
        key = (job, fire_key(fire))
        now = self._monotonic()
        with self._lock:
            self._prune(now)
            if token != self._token:
                self._token, self._made = token, {}
            if key in self._made:
                return False
            self._made[key] = now
            return True

    def start(self, attempt: str) -> bool:
        """Record that the job of ``attempt`` is being started.

        Returns:
            ``True`` the first time; ``False`` if this replica started it already.
        """
        now = self._monotonic()
        with self._lock:
            self._prune(now)
            if attempt in self._started:
                return False
            self._started[attempt] = now
            return True

    def started(self, attempt: str) -> bool:
        """Whether this replica started the job of ``attempt``."""
        with self._lock:
            return attempt in self._started

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._made = {k: t for k, t in self._made.items() if now - t < self._keep}
        self._started = {a: t for a, t in self._started.items() if now - t < self._keep}
        self._next_prune = now + self._keep / 4

    def __len__(self) -> int:
        with self._lock:
            return len(self._made)


class Claims:
    """A fire's fate on this replica, from its claim to its stored outcome.

    Thread-safe: the lanes of different jobs, the catch-up and the maintenance loop call it
    at once. Nothing here calls back into the runner.

    Args:
        specs: the loaded jobs.
        leadership: the term this replica leads; told of every failed call.
        backend: the run ledger (and the controls, for the record of paused fires).
        cluster: election name, the namespace of the run history.
        replica_id: this replica, named in the records it claims.
        timings: the lease timings (how long an unanswered claim may still land).
        metrics: where claims are counted (``baton_claims``).
        clock: wall clock for fire instants, monotonic for ages.
        log: the runner's logger.
        wake: set whenever the maintenance loop has something to store or settle.
        history_limit: runs kept per job.
    """

    def __init__(
        self,
        specs: Sequence[JobSpec],
        leadership: Leadership,
        backend: LeaseBackend,
        cluster: str,
        *,
        replica_id: str,
        timings: LeaseTimings,
        metrics: Metrics,
        clock: Clock,
        log: Any,
        wake: threading.Event,
        history_limit: int = 100,
    ) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._leadership = leadership
        self._backend = backend
        self._replica_id = replica_id
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._history_limit = history_limit
        # One attempt per fire per term; kept well past any grace.
        longest_grace = max((spec.misfire_grace for spec in specs), default=0.0)
        self._attempts = Attempts(clock.monotonic, keep=2 * longest_grace + ATTEMPT_MEMORY)
        self._recovery = Recovery(
            self._specs,
            leadership,
            backend,
            cluster,
            clock,
            metrics,
            timings.lease_ttl + timings.op_timeout,
            log,
            wake,
        )
        self._outcomes = Outcomes(backend, cluster, leadership, log, wake)
        self._pauses = PauseRecords(self._specs, backend, cluster, clock, log, ATTEMPT_MEMORY)

    # -- a fire's life --------------------------------------------------------------------------

    def claim(
        self, fires: Sequence[Fire], term: Term | None, *, held: bool = False
    ) -> list[RunRecord | None]:
        """Claim ``fires`` under ``term``, ahead of their instants.

        A fire that settling handed back is resent as the same attempt, or taken as found
        (adopted); any other is claimed as a new attempt, at most once per term. A fire of a
        paused job is skipped and recorded (``fire_paused``); none is claimed while the
        backend is unconfirmed (``fire_skipped``) or past the job's ``misfire_grace``
        (``fire_missed``). A call that fails leaves its claim in doubt, settled later.

        Args:
            fires: the fires to claim.
            term: the term this replica leads, or ``None`` (a follower claims nothing).
            held: claim nothing (a graceful resign is under way).

        Returns:
            Per fire, in order: the claim to start at its instant (``claimed``; ``running``
            if adopted after a start whose answer was lost), or ``None``: not this
            replica's to run now.
        """
        return [self._claim_one(fire, term, held) for fire in fires]

    def start(self, claimed: RunRecord, term: Term) -> RunRecord | None:
        """Mark ``claimed`` started in the backend (fenced by the lease), at its instant.

        The attempt counts as started here (:meth:`Attempts.start`) only once the backend
        has stored it so and the job is about to be called: an attempt whose start was
        refused or unanswered goes back in doubt, and settling may hand it over again.

        Returns:
            The record to run the job under (``running``), or ``None``: not to be run.
        """
        log = self._fire_log(claimed.job, claimed.scheduled_time, term)
        if self._attempts.started(claimed.attempt):
            log.error("fire_already_started", attempt=claimed.attempt)
            return None
        started: RunRecord | None = None
        if claimed.outcome == "running":
            # Adopted after a start whose answer was lost: stored as started, never run.
            started = replace(claimed, started=self._clock.now())
        else:
            try:
                started = self._backend.start(term.lease, claimed.started_now(self._clock.now()))
            except LeaseLost as exc:
                log.warning("fire_abandoned", reason=f"lease lost before the start: {exc.reason}")
                self._leadership.report(exc, term)
                self._recovery.doubt(claimed)  # still claimed: given back once settled
            except ClaimLost as exc:
                log.error("claim_lost", reason=exc.reason)
            except BackendError as exc:
                # The start may have landed. Not run now; settled once the backend answers
                # (run in this term, or recorded lost: a started fire is never given back).
                log.warning("start_failed", error=str(exc))
                # Unconfirmed until a call succeeds; refused for good: leadership ends.
                self._leadership.report(exc, term, in_doubt=True)
                self._recovery.doubt(claimed)
                self._recovery.skipped(term)
        if started is None or not self._attempts.start(claimed.attempt):
            return None
        return started

    def abandon(self, claimed: RunRecord, term: Term) -> None:
        """``claimed`` will not start: ``term`` ended (or stalled) before its instant.

        Not run (at most once); the claim goes back once the backend confirms it is ours,
        so that whoever leads can still run the fire.
        """
        log = self._fire_log(claimed.job, claimed.scheduled_time, term)
        log.warning("fire_abandoned", reason="leadership lost before the start")
        self._recovery.doubt(claimed)

    def finish(self, runs: Iterable[RunRecord]) -> None:
        """Store the outcomes ``runs``; those the backend does not take are kept and stored
        by a later :meth:`flush`."""
        self._outcomes.save(runs)

    # -- a new leader ---------------------------------------------------------------------------

    def adopt(self, recent: Sequence[RunRecord], term: Term, now: datetime) -> None:
        """Settle the unfinished runs of older terms among ``recent`` (a new leader's look).

        ``running``: its replica died (or was deposed) mid-run and will never record an end,
        so it is marked ``lost`` (if it was only paused and does finish, its own ``finish``
        overwrites this with the real outcome). ``claimed``: never started, and now never
        will be (``start`` is fenced by the lease ``term`` holds); its claimant may still
        give it back, and :meth:`settle` returns the fire to run if so while within
        misfire_grace; a claim the job would not run any more is marked ``lost``.
        """
        for run in recent:
            if run.token >= term.token:
                continue
            if run.outcome == "claimed" and not self._recovery.suspect(run, term):
                self.finish([run.finished("lost", now, NEVER_STARTED)])
            if run.outcome == "running":
                self._log.warning(
                    "run_orphaned",
                    job=run.job,
                    scheduled_time=run.scheduled_time.isoformat(),
                    token=run.token,
                    replica_of_run=run.replica_id,
                )
                self.finish([run.finished("lost", now, ORPHAN_MESSAGE)])

    def paused_fires(self, job: str) -> PausedFires:
        """The fires of ``job`` some leader skipped as paused: handled, never caught up."""
        raw = self._leadership.controls.current.skipped_fires(job)
        return PausedFires(tuple(skipped_runs(raw)), self._pauses.unsaved(job))

    def skipped(self, term: Term) -> None:
        """``term`` could not catch up now: :meth:`settle` returns it once the backend
        answers, to catch up then."""
        self._recovery.skipped(term)

    # -- the maintenance loop -------------------------------------------------------------------

    def pending(self) -> bool:
        """True while some claim is in doubt, watched, or a catch-up is owed."""
        return self._recovery.pending()

    def next_pass(self) -> float:
        """Seconds the maintenance loop may wait (unless woken) before its next pass."""
        return SETTLE_INTERVAL if self.pending() else FLUSH_RETRY

    def flush(self) -> None:
        """Store what the backend could not take before: outcomes, and (while the backend
        answers) the records of fires skipped as paused."""
        if self._outcomes.pending():
            self._outcomes.flush()
        if self._pauses.pending() and self._leadership.backend_ok:
            self._pauses.flush()

    def settle(self) -> Settled:
        """Settle claims in doubt and watched ones, if any and while the backend answers.

        Returns:
            The fires to queue on their lanes, and the term to catch up, if any.
        """
        if not (self._recovery.pending() and self._leadership.backend_ok):
            return Settled()
        return self._recovery.settle()

    def close(self) -> None:
        """On shutdown: give back every claim of ours in doubt (one bounded pass) and store
        the kept outcomes (one attempt)."""
        self._recovery.withdraw_all()
        self._outcomes.flush()

    # -- claiming one fire ----------------------------------------------------------------------

    def _fire_log(self, job: str, fire: datetime, term: Term) -> Any:
        return self._log.bind(job=job, scheduled_time=fire.isoformat(), token=term.token)

    def _claim_one(self, fire: Fire, term: Term | None, held: bool) -> RunRecord | None:
        spec = self._specs[fire.job]
        # An attempt settling handed over: sent again, or run as found.
        handover = self._recovery.take_handover(fire.job, fire.at, term)
        if handover is not None and self._attempts.started(handover.run.attempt):
            handover = None  # raced its own first run (the lane ran it meanwhile)
        if term is None or held:
            if handover is not None:
                self._recovery.doubt(handover.run)  # not now: settled again (given back)
            return None  # followers see every fire too; only the leader acts
        late = (self._clock.now() - fire.at).total_seconds()
        log = self._fire_log(fire.job, fire.at, term)
        if handover is None or handover.resend:
            resend = handover.run if handover is not None else None
            return self._claim_new(spec, fire.at, term, late, log, resend)
        if late > spec.misfire_grace:
            log.warning("fire_missed", late_by=round(late, 3), misfire_grace=spec.misfire_grace)
            lost = handover.run.finished("lost", self._clock.now(), "claim confirmed too late")
            self.finish([lost])
            return None
        return handover.run

    def _claim_new(
        self,
        spec: JobSpec,
        fire: datetime,
        term: Term,
        late: float,
        log: Any,
        resend: RunRecord | None,
    ) -> RunRecord | None:
        """The claim of ``fire`` under ``term``, or ``None`` (not ours to run).

        ``resend``: the term's attempt at this fire whose answer was lost and whose record
        was not found; it is sent again as it was (idempotent), not as a new attempt.
        """
        if self._leadership.controls.current.is_paused(spec.name):
            log.info("fire_paused")
            # Recorded, so that no leader's catch-up runs it after the resume.
            self._pauses.add(spec.name, fire)
            return None
        if not self._leadership.backend_ok:
            # A call went unanswered: claim nothing until a renewal confirms the backend
            # (a claim in the dark could only be lost). Skipped fires are caught up once it
            # answers, by this term or whoever leads next.
            log.warning("fire_skipped", reason="backend unconfirmed since a failed call")
            if resend is not None:
                self._recovery.doubt(resend)
            self._recovery.skipped(term)
            return None
        if late > spec.misfire_grace:
            log.warning("fire_missed", late_by=round(late, 3), misfire_grace=spec.misfire_grace)
            if resend is not None:
                self._recovery.doubt(resend)  # recorded lost if it landed after all
            return None
        if resend is not None:
            run = resend
        elif self._attempts.first(term.token, spec.name, fire):
            run = RunRecord(
                job=spec.name,
                scheduled_time=fire,
                replica_id=self._replica_id,
                token=term.token,
                started=self._clock.now(),
            )
        else:
            # Proposed again in this term (the trigger and a catch-up, a clock step): one
            # attempt per fire per term.
            log.info("fire_already_attempted")
            self._metrics.claims.labels("already_attempted").inc()
            return None
        retention = Retention(limit=self._history_limit, protect=spec.misfire_grace * 2)
        claims = self._metrics.claims
        try:
            claimed = self._send(term, run, retention, spec.misfire_grace, log)
        except LeaseLost as exc:
            claims.labels("lease_lost").inc()
            log.warning("claim_refused", reason=exc.reason)
            self._leadership.report(exc, term)
            return None
        except BackendError as exc:
            # No answer: the claim may have landed all the same. Not run now; settled once
            # the backend answers (run late, or given back).
            claims.labels("error").inc()
            log.warning("claim_failed", error=str(exc))
            # Unconfirmed until a call succeeds; refused for good: leadership ends.
            self._leadership.report(exc, term, in_doubt=True)
            self._recovery.doubt(run)
            self._recovery.skipped(term)
            return None
        if claimed is None:
            claims.labels("duplicate").inc()
            log.info("fire_already_claimed")
            return None
        if claimed.outcome != "claimed":
            # A resend answered with this attempt's record already started or ended: its
            # earlier send and start landed unanswered. Settled as a doubt (never run twice).
            self._recovery.doubt(run)
            return None
        claims.labels("claimed").inc()
        self._recovery.claimed(claimed)
        return claimed

    def _send(
        self, term: Term, run: RunRecord, retention: Retention, grace: float, log: Any
    ) -> RunRecord | None:
        """Claim ``run``; if the backend's clock says it is not due yet (this replica's clock
        runs ahead), wait by the backend's clock and try again, within ``grace``."""
        waited = 0.0
        while True:
            try:
                return self._backend.claim(term.lease, run, retention)
            except FireNotDue as exc:
                if waited + exc.wait > grace or self._leadership.current_term() is not term:
                    log.warning("fire_not_due_given_up", waited=round(waited, 3))
                    return None
                log.warning("fire_not_due", wait=round(exc.wait, 3), detail="clock ahead")
                time.sleep(exc.wait)
                waited += exc.wait
