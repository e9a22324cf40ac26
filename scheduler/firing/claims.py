"""A fire's fate: claimed, confirmed, in doubt, withdrawn or adopted; started; its outcome kept.

A fire flows one way: trigger -> runner -> claims -> backend -> job -> claims (outcome). The
runner hands :class:`Claims` the fires due and gets back the claims to start; at the instant
it asks :meth:`Claims.start`; it hands back the outcome (:meth:`Claims.finish`). Everything
in between stays here: the attempt ledger (below), claims left in doubt and the fires a
deposed leader gave back (:mod:`scheduler.firing.recovery`, settled by :meth:`Claims.settle`,
which *returns* the fires to queue instead of calling the runner), outcomes the backend
could not take yet (:mod:`scheduler.firing.outcomes`) and the fires skipped as paused
(:mod:`scheduler.firing.pauses`). The API takes batches: every fire due at one instant is
claimed with one :meth:`~scheduler.backends.base.RunLedger.claim_many` (per retention; jobs
with the same ``misfire_grace`` share one), started with one
:meth:`~scheduler.backends.base.RunLedger.start_many`, and outcomes are queued and stored with
:meth:`~scheduler.backends.base.RunLedger.finish_many` by the maintenance loop. Every rule
below still holds per fire: a batch is only a way to carry many fires in one round trip.
The calls themselves and the sorting of their answers are :mod:`scheduler.firing.sending`.
A batch that fails is logged once (``claim_failed``, ``start_failed``, ``claim_refused``,
``fire_abandoned``: with the count, the instant and the jobs), never once per fire.

**The rule.** In one leadership term a replica makes at most one claim *attempt* per fire
(job, instant); whatever proposes the fire again in that term — the fire loop, the
catch-up after an election or an outage, a lane's backlog, :mod:`scheduler.firing.recovery` — is
dropped (``fire_already_attempted``). The only repeat is a *resend* of the same attempt
(same :attr:`~scheduler.backends.runs.RunRecord.attempt`) by recovery after the first send went
unanswered, which every backend answers idempotently. :class:`Attempts` is that ledger.

**One clock proposes fires.** The trigger and the catch-up both name instants on this
replica's wall clock (:meth:`Clock.now`, which the fire loop reads too): the
backend's clock is not read per proposal, because SQLite has none, ZooKeeper exposes none,
and a read per fire would add a round trip to every tick. The two paths still see that clock
at different moments — the fire loop computes its wait before a clock step and wakes
after it, the catch-up plans from the stepped clock — so a stepped clock can make both propose the
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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.backends.runs import RunRecord
from scheduler.clock import Clock
from scheduler.firing.attempts import ATTEMPT_MEMORY, Attempts
from scheduler.firing.doubts import NEVER_STARTED, ORPHAN_MESSAGE, Fire, Settled
from scheduler.firing.outcomes import FLUSH_RETRY, Outcomes
from scheduler.firing.pauses import PausedFires, PauseRecords, skipped_runs
from scheduler.firing.recovery import Recovery
from scheduler.firing.sending import LISTED, Send, Sender, describe_batch
from scheduler.firing.tally import SkipReason, Tally
from scheduler.jobs.spec import JobSpec
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.leadership.view import Leadership
from scheduler.ops.metrics import Metrics

__all__ = ["ATTEMPT_MEMORY", "Attempts", "Claims", "Fire", "Settled"]


class Claims:
    """A fire's fate on this replica, from its claim to its stored outcome.

    Thread-safe: the claim and start threads, the job pool, the catch-up and the maintenance
    loop call it at once. Nothing here calls back into the runner.

    Args:
        specs: the loaded jobs.
        leadership: the term this replica leads; told of every failed call.
        backend: the run ledger (and the controls, for the record of paused fires).
        cluster: election name, the namespace of the run history.
        replica_id: this replica, named in the records it claims.
        timings: the lease timings (how long an unanswered claim may still land).
        metrics: where claims are counted (``baton_claims``, ``baton_claim_batch_size``).
        clock: wall clock for fire instants, monotonic for ages.
        log: the runner's logger.
        wake: set whenever the maintenance loop has something to store or settle.
        history_limit: runs kept per job.
        tally: where fires not run are counted and bursts summarised (a private one by
            default).
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
        tally: Tally | None = None,
    ) -> None:
        self._specs = {spec.name: spec for spec in specs}
        self._leadership = leadership
        self._replica_id = replica_id
        self._metrics = metrics
        self._clock = clock
        self._log = log
        self._tally = tally or Tally(metrics, log)
        # One attempt per fire per term; kept well past any grace.
        longest_grace = max((spec.misfire_grace for spec in specs), default=0.0)
        self._attempts = Attempts(keep=2 * longest_grace + ATTEMPT_MEMORY)
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
            self._tally,
        )
        self._sender = Sender(
            backend, leadership, self._recovery, self._tally, metrics, log, history_limit
        )
        self._outcomes = Outcomes(backend, cluster, leadership, log, wake)
        self._pauses = PauseRecords(self._specs, backend, cluster, clock, log, ATTEMPT_MEMORY)

    @property
    def tally(self) -> Tally:
        """Where fires not run are counted and bursts summarised."""
        return self._tally

    @property
    def saver(self) -> threading.Thread:
        """The thread that stores queued outcomes (started by the first one)."""
        return self._outcomes.saver

    # -- a fire's life --------------------------------------------------------------------------

    def claim(
        self, fires: Sequence[Fire], term: Term | None, *, held: bool = False
    ) -> list[RunRecord | None]:
        """Claim ``fires`` under ``term``, ahead of their instants, in as few calls as the
        backend allows (one :meth:`~scheduler.backends.base.RunLedger.claim_many` per
        retention).

        A fire that settling handed back is resent as the same attempt, or taken as found
        (adopted); any other is claimed as a new attempt, at most once per term. A fire of a
        paused job is skipped and recorded (``paused``); none is claimed while the backend
        is unconfirmed (``backend_unconfirmed``) or past the job's ``misfire_grace``
        (``missed``). A batch that fails leaves its claims in doubt, settled later. Every
        fire not claimed is counted by its reason (:class:`~scheduler.firing.tally.Tally`).

        Args:
            fires: the fires to claim.
            term: the term this replica leads, or ``None`` (a follower claims nothing).
            held: claim nothing (a graceful resign is under way).

        Returns:
            Per fire, in order: the claim to start at its instant (``claimed``; ``running``
            if adopted after a start whose answer was lost), or ``None``: not this
            replica's to run now.
        """
        answers: list[RunRecord | None] = [None] * len(fires)
        skipped: defaultdict[SkipReason, list[str]] = defaultdict(list)
        sends: defaultdict[float, list[Send]] = defaultdict(list)  # by misfire_grace
        paused: list[tuple[str, datetime]] = []
        lost: list[RunRecord] = []
        unconfirmed = False
        now = self._clock.now()
        for index, fire in enumerate(fires):
            spec = self._specs[fire.job]
            # An attempt settling handed over: sent again, or run as found.
            handover = self._recovery.take_handover(fire.job, fire.at, term)
            if handover is not None and self._attempts.started(
                handover.run.job, handover.run.scheduled_time
            ):
                handover = None  # raced its own first run (the lane ran it meanwhile)
            if term is None or held:
                if handover is not None:
                    self._recovery.doubt(handover.run)  # not now: settled again (given back)
                if term is not None:
                    skipped[SkipReason.RESIGNING].append(fire.job)
                continue  # followers see every fire too; only the leader acts
            late = (now - fire.at).total_seconds()
            if handover is not None and not handover.resend:
                if late > spec.misfire_grace:
                    self._fire_debug("fire_missed", fire, term, late_by=round(late, 3))
                    lost.append(handover.run.finished("lost", now, "claim confirmed too late"))
                    skipped[SkipReason.MISSED].append(fire.job)
                    continue
                answers[index] = handover.run
                continue
            resend = handover.run if handover is not None else None
            reason = self._refusal(spec, fire, term, late, resend)
            if reason is SkipReason.PAUSED:
                # Recorded, so that no leader's catch-up runs it after the resume.
                paused.append((fire.job, fire.at))
            unconfirmed |= reason is SkipReason.BACKEND_UNCONFIRMED
            if reason is not None:
                if resend is None:  # a resend stays in doubt: counted when it is settled
                    skipped[reason].append(fire.job)
                continue
            if resend is not None:
                run = resend
            elif self._attempts.first(term.token, spec.name, fire.at):
                run = RunRecord(
                    job=spec.name,
                    scheduled_time=fire.at,
                    replica_id=self._replica_id,
                    token=term.token,
                    started=now,
                )
            else:
                # Proposed again in this term (the trigger and a catch-up, a clock step): one
                # attempt per fire per term.
                self._fire_debug("fire_already_attempted", fire, term)
                self._metrics.claims.labels("already_attempted").inc()
                skipped[SkipReason.ALREADY_ATTEMPTED].append(fire.job)
                continue
            sends[spec.misfire_grace].append(Send(index, run))
        if lost:
            self.finish(lost)
        if paused:
            self._pauses.add_many(paused)
        if unconfirmed and term is not None:
            # Caught up once the backend answers, by this term or whoever leads next.
            self._recovery.skipped(term)
        if term is not None:  # only a leader has anything to send
            for grace, group in sends.items():
                self._sender.claim_batch(term, group, grace, answers, skipped)
        for why, jobs in skipped.items():
            self._tally.skipped(why, jobs)
        return answers

    def start(self, claimed: RunRecord, term: Term) -> RunRecord | None:
        """:meth:`start_many` for one claim."""
        return self.start_many([claimed], term)[0]

    def start_many(self, claimed: Sequence[RunRecord], term: Term) -> list[RunRecord | None]:
        """Mark ``claimed`` started in the backend (fenced by the lease), at their instant,
        in one :meth:`~scheduler.backends.base.RunLedger.start_many`.

        An attempt counts as started here (:meth:`Attempts.start`) only once the backend
        has stored it so and the job is about to be called: an attempt whose start was
        refused or unanswered goes back in doubt, and settling may hand it over again.

        Returns:
            Per claim, in order: the record to run the job under (``running``), or
            ``None``: not to be run.
        """
        answers: list[RunRecord | None] = [None] * len(claimed)
        now = self._clock.now()
        send: list[int] = []
        for index, run in enumerate(claimed):
            if self._attempts.started(run.job, run.scheduled_time):
                self._log.error(
                    "fire_already_started",
                    job=run.job,
                    scheduled_time=run.scheduled_time.isoformat(),
                    token=term.token,
                    attempt=run.attempt,
                )
            elif run.outcome == "running":
                # Adopted after a start whose answer was lost: stored as started, never run.
                answers[index] = replace(run, started=now)
            else:
                send.append(index)
        if send:
            self._sender.start_batch(term, [claimed[i] for i in send], send, answers, now)
        for index, started in enumerate(answers):
            if started is not None and not self._attempts.start(
                started.job, started.scheduled_time
            ):
                answers[index] = None
        return answers

    def abandon(self, claimed: Sequence[RunRecord], term: Term) -> None:
        """``claimed`` will not start: ``term`` ended (or stalled) before their instant, or
        the replica stops firing.

        Not run (at most once); each claim goes back once the backend confirms it is ours,
        so that whoever leads can still run the fire. Logged once (``fire_abandoned``).
        """
        if not claimed:
            return
        self._log.warning(
            "fire_abandoned",
            reason="leadership lost before the start",
            token=term.token,
            **describe_batch(claimed),
        )
        self._recovery.doubt_many(claimed)
        self._tally.skipped(SkipReason.ABANDONED, [run.job for run in claimed])

    def finish(self, runs: Iterable[RunRecord]) -> None:
        """Store the outcomes ``runs`` now (after any queued); those the backend does not take
        stay queued and are stored by a later :meth:`flush`."""
        self._outcomes.save(runs)

    def finish_later(self, runs: Iterable[RunRecord]) -> None:
        """Queue the outcomes ``runs``: the maintenance loop stores them in batches
        (:meth:`flush`), and keeps them until the backend takes them."""
        self._outcomes.queue(runs)

    # -- a new leader ---------------------------------------------------------------------------

    def adopt(self, recent: Sequence[RunRecord], term: Term, now: datetime) -> None:
        """Settle the unfinished runs of older terms among ``recent`` (a new leader's look).

        ``running``: its replica died (or was deposed) mid-run and will never record an end,
        so it is marked ``lost`` (if it was only paused and does finish, its own ``finish``
        overwrites this with the real outcome). ``claimed``: never started, and now never
        will be (``start`` is fenced by the lease ``term`` holds); its claimant may still
        give it back, and :meth:`settle` returns the fire to run if so while within
        misfire_grace; a claim the job would not run any more is marked ``lost``. The
        records marked ``lost`` are stored in one batch.
        """
        lost: list[RunRecord] = []
        orphans: list[RunRecord] = []
        for run in recent:
            if run.token >= term.token:
                continue
            if run.outcome == "claimed" and not self._recovery.suspect(run, term):
                lost.append(run.finished("lost", now, NEVER_STARTED))
            if run.outcome == "running":
                orphans.append(run)
                lost.append(run.finished("lost", now, ORPHAN_MESSAGE))
        if len(orphans) == 1:
            (run,) = orphans
            self._log.warning(
                "run_orphaned",
                job=run.job,
                scheduled_time=run.scheduled_time.isoformat(),
                token=run.token,
                replica_of_run=run.replica_id,
            )
        elif orphans:  # one line for the lot (a leader with many jobs running died)
            self._log.warning(
                "run_orphaned",
                replicas_of_runs=sorted({run.replica_id for run in orphans})[:LISTED],
                **describe_batch(orphans),
            )
        if lost:
            self.finish(lost)

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
        """Seconds the maintenance loop may wait (unless woken) before its next pass: until
        something is due to be settled or the burst summary is due; at most
        :data:`~scheduler.firing.outcomes.FLUSH_RETRY` (outcomes the backend did not take
        are retried then)."""
        waits = [FLUSH_RETRY]
        # Nothing is settled while the backend is unconfirmed: a renewal that answers wakes
        # the loop (Leadership.on_backend_ok).
        look = self._recovery.next_look() if self._leadership.backend_ok else None
        for wait in (look, self._tally.next_summary()):
            if wait is not None:
                waits.append(wait)
        return min(waits)

    def flush(self) -> None:
        """Store what was not taken before: outcomes a failed store left (only those:
        storing whatever is queued at every pass cut a burst's outcomes into ~500 small
        calls at 10,000 jobs), and (while the backend answers) the records of fires
        skipped as paused."""
        self._outcomes.retry()
        if self._pauses.pending() and self._leadership.backend_ok:
            self._pauses.flush()

    def settle(self) -> Settled:
        """Settle the claims in doubt and watched ones that are due, if any and while the
        backend answers.

        Returns:
            The fires to queue on their lanes, and the term to catch up, if any.
        """
        if not (self._recovery.pending() and self._leadership.backend_ok):
            return Settled()
        return self._recovery.settle()

    def close(self) -> None:
        """On shutdown: give back every claim of ours in doubt (one bounded pass), store
        the kept outcomes (one attempt), and write the last burst summary."""
        self._recovery.withdraw_all()
        self._outcomes.flush()
        self._outcomes.close()
        self._tally.summarise(force=True)

    # -- claiming ---------------------------------------------------------------------------------

    def _fire_debug(self, event: str, fire: Fire, term: Term, **fields: Any) -> None:
        self._log.debug(
            event, job=fire.job, scheduled_time=fire.at.isoformat(), token=term.token, **fields
        )

    def _refusal(
        self, spec: JobSpec, fire: Fire, term: Term, late: float, resend: RunRecord | None
    ) -> SkipReason | None:
        """Why ``fire`` is not to be claimed now, or ``None``.

        ``resend``: the term's attempt at this fire whose answer was lost and whose record
        was not found; if it is not sent now it goes back in doubt.
        """
        if self._leadership.controls.current.is_paused(spec.name):
            self._fire_debug("fire_paused", fire, term)
            return SkipReason.PAUSED
        if not self._leadership.backend_ok:
            # A call went unanswered: claim nothing until a renewal confirms the backend
            # (a claim in the dark could only be lost). Skipped fires are caught up once it
            # answers, by this term or whoever leads next.
            self._fire_debug(
                "fire_skipped", fire, term, reason="backend unconfirmed since a failed call"
            )
            if resend is not None:
                self._recovery.doubt(resend)
            return SkipReason.BACKEND_UNCONFIRMED
        if late > spec.misfire_grace:
            self._fire_debug(
                "fire_missed", fire, term, late_by=round(late, 3), misfire_grace=spec.misfire_grace
            )
            if resend is not None:
                self._recovery.doubt(resend)  # recorded lost if it landed after all
            return SkipReason.MISSED
        return None
