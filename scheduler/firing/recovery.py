"""Claims whose fate this replica does not know, and fires a deposed leader gave back.

This is the settling half of the claims layer: only :class:`~scheduler.firing.claims.Claims`
uses it. It never runs a fire itself: :meth:`Recovery.settle` returns the fires to queue.

A claim is one backend write. When its answer never arrives (a slow or broken link: the
call times out) it may still have landed, and then the fire is claimed but nobody runs it —
at most once, but lost. The same holds for a claim made just before leadership was lost
(the job was never started), and for a ``start`` that went unanswered. Each such *doubt* is
one claim attempt (:attr:`~scheduler.backends.runs.RunRecord.attempt`) this replica never started,
and :class:`Recovery` settles it once the backend answers, by what the fire's record says:

* this attempt's record, under the term this replica still leads: the lane runs it (late,
  within ``misfire_grace``) without claiming again;
* this attempt's ``claimed`` record, under a term this replica no longer leads: the claim
  is withdrawn (:meth:`~scheduler.backends.base.LeaseBackend.unclaim`), so whoever leads
  runs the fire from its catch-up — only the claimant can know that the job never started;
  the backend refuses if the record is no longer ``claimed`` (a started fire is never
  given back), or is another attempt's;
* this attempt's ``running`` record (a start that landed unanswered) under a term no longer
  led, or any of its records past ``misfire_grace``: recorded ``lost``, never run;
* no record: it never landed (yet). In the same term the *same* attempt is sent again
  (idempotent: :mod:`scheduler.firing.claims`); in a newer term of ours the fire is claimed
  afresh (the old attempt's lease check can no longer pass); a follower waits until the
  old attempt cannot land any more;
* another attempt's record: the fire is theirs; nothing to do.

The other side: a new leader finds ``claimed`` records left under an older token (orphans).
The claimant may still give them back, so the new leader watches those within
``misfire_grace`` (*suspects*) and runs any whose claimant gives it back while there is still
time; it cannot start them itself (``start`` is fenced by the lease it now holds).

And fires skipped while the backend was unconfirmed are caught up in the same term once it
answers again (a term that survives a short outage would otherwise just miss them).

**Cost.** Each unsettled fire is looked up again with exponential backoff
(:data:`SETTLE_INTERVAL` doubling up to :data:`BACKOFF_CAP`), counted across resends of the
same attempt, and given up once the job would not run it any more (past ``misfire_grace``:
recorded ``lost`` if its claim landed, counted as a missed fire either way). A settling pass
writes one ``claims_settled`` line with its counts (the per-fire lines, ``claim_confirmed``
and ``claim_withdrawn``, are at ``debug``): a burst of claims in doubt is logged once per
pass that changes something, not once per fire per retry (issue 13: 105 claims retried every
0.25 s for 60 s wrote 18,509 lines).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.backends.runs import RunRecord, fire_key
from scheduler.clock import Clock
from scheduler.errors import BackendError
from scheduler.firing.doubts import (
    BACKOFF_CAP,
    NEVER_STARTED,
    ORPHAN_MESSAGE,
    SETTLE_INTERVAL,
    Doubt,
    Fire,
    Handover,
    Key,
    Settled,
    SettlePass,
    Suspect,
    backoff,
)
from scheduler.firing.tally import SkipReason, Tally
from scheduler.jobs.spec import JobSpec
from scheduler.leadership.term import Term
from scheduler.leadership.view import Leadership
from scheduler.ops.metrics import Metrics

# The values are defined in scheduler.firing.doubts and importable from here as before.
__all__ = [
    "BACKOFF_CAP",
    "NEVER_STARTED",
    "ORPHAN_MESSAGE",
    "SETTLE_INTERVAL",
    "Fire",
    "Handover",
    "Recovery",
    "Settled",
    "backoff",
]


class Recovery:
    """The bookkeeping of unsettled claims for one :class:`~scheduler.firing.claims.Claims`.

    Args:
        specs: the jobs by name (``misfire_grace``, ``catch_up``).
        leadership: whether (and in which term) this replica leads.
        backend: where the claims live.
        cluster: election name.
        clock: wall clock for fire instants, monotonic for how long a doubt is watched.
        metrics: where late confirmations and withdrawals are counted.
        landing_bound: seconds after which a claim sent before a doubt arose can no longer
            land: the lease TTL plus the bound on one backend call.
        log: the runner's logger.
        wake: set whenever there is something to settle.
        tally: where fires given up are counted (a private one by default).
    """

    def __init__(
        self,
        specs: Mapping[str, JobSpec],
        leadership: Leadership,
        backend: LeaseBackend,
        cluster: str,
        clock: Clock,
        metrics: Metrics,
        landing_bound: float,
        log: Any,
        wake: threading.Event,
        tally: Tally | None = None,
    ) -> None:
        self._specs = specs
        self._leadership = leadership
        self._backend = backend
        self._cluster = cluster
        self._clock = clock
        self._metrics = metrics
        self._landing_bound = landing_bound
        self._log = log
        self._lock = threading.Lock()
        self._doubts: dict[str, Doubt] = {}  # by attempt: ours, never started; fate unknown
        self._handed: dict[Key, Handover] = {}  # ours, of the term we lead: for the lane
        self._suspects: dict[Key, Suspect] = {}  # others', maybe given back
        self._recheck: Term | None = None  # a term that skipped fires: catch up
        self._recheck_due = 0.0  # monotonic time the catch-up is due (after a failed pass)
        self._tally = tally or Tally(metrics, log)
        self.wake = wake

    # -- what the runner reports --------------------------------------------------------------

    def doubt(self, run: RunRecord) -> None:
        """The attempt ``run`` (never started by us) was sent without an answer, or was
        claimed and then not started.

        An attempt already in doubt (a resend that failed again) keeps its age and backs
        off further: the next look waits :func:`backoff` of its tries so far.
        """
        self.doubt_many([run])

    def doubt_many(self, runs: Sequence[RunRecord]) -> None:
        """:meth:`doubt` for each of ``runs`` (one batch whose answer was lost)."""
        now = self._clock.monotonic()
        with self._lock:
            for run in runs:
                known = self._doubts.get(run.attempt)
                if known is None:
                    self._doubts[run.attempt] = Doubt(run, now, 0, now)
                else:
                    tries = known.tries + 1
                    self._doubts[run.attempt] = Doubt(run, known.since, tries, now + backoff(tries))
        if runs:
            self.wake.set()

    def claimed(self, run: RunRecord) -> None:
        """The attempt ``run`` is answered as claimed: nothing about it is in doubt."""
        self.claimed_many([run])

    def claimed_many(self, runs: Sequence[RunRecord]) -> None:
        """:meth:`claimed` for each of ``runs``."""
        with self._lock:
            if self._doubts:
                for run in runs:
                    self._doubts.pop(run.attempt, None)

    def take_handover(self, job: str, fire: datetime, term: Term | None) -> Handover | None:
        """The attempt at this fire that recovery handed to the lane, if it is of ``term``;
        one of a term no longer led goes back to be settled (withdrawn)."""
        with self._lock:
            if not self._handed:  # the common case, once per fire of every burst
                return None
            handover = self._handed.pop((job, fire_key(fire)), None)
            if handover is None or (term is not None and handover.run.token == term.token):
                return handover
            now = self._clock.monotonic()
            self._doubts[handover.run.attempt] = Doubt(handover.run, now, 0, now)
        self.wake.set()
        return None

    def suspect(self, orphan: RunRecord, term: Term) -> bool:
        """A new leader found ``orphan`` (``claimed`` under an older token); run its fire if
        the claimant gives it back.

        Returns:
            ``True`` if it is watched; ``False`` if its job would not run it anyway
            (``catch_up="none"``, or past ``misfire_grace``).
        """
        spec = self._specs.get(orphan.job)
        if spec is None or spec.catch_up == "none" or self._too_late(orphan, spec):
            return False
        now = self._clock.monotonic()
        with self._lock:
            self._suspects[(orphan.job, orphan.key)] = Suspect(orphan, term.token, 0, now)
        self.wake.set()
        return True

    def skipped(self, term: Term) -> None:
        """``term`` skipped a fire (or lost a claim) because the backend did not answer: it
        catches up at a pass :data:`SETTLE_INTERVAL` from now, once the backend answers."""
        with self._lock:
            self._recheck = term
            self._recheck_due = self._clock.monotonic() + SETTLE_INTERVAL
        self.wake.set()

    def pending(self) -> bool:
        with self._lock:
            return bool(self._doubts or self._suspects or self._recheck)

    def next_look(self) -> float | None:
        """Seconds until something is due to be settled (0: now), or ``None`` if nothing is
        unsettled."""
        with self._lock:
            dues = [d.due for d in self._doubts.values()]
            if self._recheck is not None:
                dues.append(self._recheck_due)
            dues += [s.due for s in self._suspects.values()]
        if not dues:
            return None
        return max(0.0, min(dues) - self._clock.monotonic())

    # -- settling ------------------------------------------------------------------------------

    def settle(self) -> Settled:
        """One pass over everything unsettled (call while the backend answers).

        Returns:
            The fires to queue, and the current term if it skipped fires during the outage
            and should now catch up. A backend error ends the pass early (logged as
            ``claim_unsettled``; the rest is settled by a later pass): the fires found
            until then are returned, no catch-up.
        """
        now = self._clock.monotonic()
        with self._lock:
            doubts = [d for d in self._doubts.values() if d.due <= now]
            suspects = [s for s in self._suspects.values() if s.due <= now]
        fires: list[Fire] = []
        done = SettlePass()
        try:
            for doubt in doubts:
                try:
                    self._settle_doubt(doubt, fires, done)
                except BackendError as exc:
                    self._unsettled(doubt.run, exc, doubts, suspects)
                    return Settled(fires)
            for suspect in suspects:
                try:
                    self._settle_suspect(suspect, fires, done)
                except BackendError as exc:
                    self._unsettled(suspect.run, exc, doubts, suspects)
                    return Settled(fires)
        finally:
            done.log(self._log)
        with self._lock:
            term, self._recheck = self._recheck, None
        current = self._leadership.current_term()
        return Settled(fires, term if term is not None and current is term else None)

    def _unsettled(
        self,
        run: RunRecord,
        exc: BackendError,
        doubts: list[Doubt],
        suspects: list[Suspect],
    ) -> None:
        """A pass ended on a backend error: one line, and everything it was to look at
        backs off (the next pass does not hammer a backend that just failed)."""
        self._log.warning(
            "claim_unsettled", job=run.job, unsettled=len(doubts) + len(suspects), error=str(exc)
        )
        now = self._clock.monotonic()
        with self._lock:
            self._recheck_due = now + SETTLE_INTERVAL
            for doubt in doubts:
                if self._doubts.get(doubt.run.attempt) is doubt:
                    tries = doubt.tries + 1
                    self._doubts[doubt.run.attempt] = replace(
                        doubt, tries=tries, due=now + backoff(tries)
                    )
            for suspect in suspects:
                key = (suspect.run.job, suspect.run.key)
                if self._suspects.get(key) is suspect:
                    tries = suspect.tries + 1
                    self._suspects[key] = replace(suspect, tries=tries, due=now + backoff(tries))

    def withdraw_all(self) -> None:
        """On shutdown: give back every claim in doubt that is ours (one bounded pass)."""
        with self._lock:
            doubts = [
                *(d.run for d in self._doubts.values()),
                *(h.run for h in self._handed.values()),
            ]
            self._doubts.clear()
            self._handed.clear()
        withdrawn = 0
        for index, run in enumerate(doubts):
            try:
                withdrawn += self._withdraw(run, "replica shut down")
            except BackendError as exc:
                # The backend does not answer: the rest would each wait op_timeout too. The
                # next leader adopts them (watched, then recorded lost past misfire_grace).
                self._log.warning(
                    "claim_unsettled", job=run.job, unsettled=len(doubts) - index, error=str(exc)
                )
                break
        if withdrawn:
            self._log.info("claims_settled", withdrawn=withdrawn, reason="replica shut down")

    def _settle_doubt(self, doubt: Doubt, fires: list[Fire], done: SettlePass) -> None:
        run = doubt.run
        spec = self._specs[run.job]
        stored = self._backend.lookup(self._cluster, run.job, run.scheduled_time)
        ours = stored if stored is not None and stored.attempt == run.attempt else None
        if self._too_late(run, spec):
            # The bound: the job would not run it any more. Given up, and said so.
            self._forget_doubt(doubt)
            if ours is not None and ours.unfinished:
                # Nobody can run it any more; say so rather than leave it unfinished.
                self._backend.finish(
                    self._cluster, ours.finished("lost", self._clock.now(), NEVER_STARTED)
                )
                done.note("recorded_lost", run.job)
                self._tally.skipped(SkipReason.MISSED, [run.job])
            elif stored is None:
                done.note("given_up", run.job)
                self._tally.skipped(SkipReason.MISSED, [run.job])
            return
        term = self._leadership.current_term()
        if stored is None:
            # Not landed (yet: a delayed request may still arrive, so keep watching). In
            # the same term, the same attempt is sent again (idempotent). A newer term of
            # ours claims afresh: the old attempt's lease check can no longer pass. A
            # follower leaves it to the leader's catch-up, and stops watching once the lease
            # the claim was sent under has expired on the server for sure.
            if term is not None and term.token == run.token:
                self._later(doubt)
                fires.append(self._hand(Handover(run, resend=True)))
                done.note("resent", run.job)
            elif term is not None:
                self._forget_doubt(doubt)
                fires.append(Fire(run.job, run.scheduled_time))
                done.note("claimed_afresh", run.job)
            elif self._clock.monotonic() - doubt.since > self._landing_bound:
                self._forget_doubt(doubt)
            else:
                self._later(doubt)
            return
        if ours is None or not ours.unfinished:
            self._forget_doubt(doubt)  # another attempt's record, or ended: nothing of ours
            return
        if term is not None and term.token == run.token:
            if not self._forget_doubt(doubt):
                return  # settled meanwhile
            self._log.debug(
                "claim_confirmed",
                job=run.job,
                scheduled_time=run.scheduled_time.isoformat(),
                token=run.token,
                state=ours.outcome,
            )
            self._metrics.claims.labels("confirmed_late").inc()
            fires.append(self._hand(Handover(ours, resend=False)))
            done.note("confirmed", run.job)
            return
        self._forget_doubt(doubt)
        if ours.outcome == "claimed":
            if self._withdraw(ours, "leadership lost before the start"):
                done.note("withdrawn", run.job)
        else:
            # Its start landed unanswered, so this replica never ran it, and its term is
            # over: a started fire is never given back. Record that it did not run.
            lost = ours.finished("lost", self._clock.now(), "start unconfirmed; not run")
            self._backend.finish(self._cluster, lost)
            done.note("recorded_lost", run.job)
        if term is not None:
            fires.append(Fire(run.job, run.scheduled_time))  # a newer term of ours: afresh
            done.note("claimed_afresh", run.job)

    def _later(self, doubt: Doubt) -> None:
        """Look at ``doubt`` again after its next backoff (unless it changed meanwhile)."""
        tries = doubt.tries + 1
        due = self._clock.monotonic() + backoff(tries)
        with self._lock:
            if self._doubts.get(doubt.run.attempt) is doubt:
                self._doubts[doubt.run.attempt] = replace(doubt, tries=tries, due=due)

    def _hand(self, handover: Handover) -> Fire:
        """Keep ``handover`` for its lane; the fire to queue (kept even where the job
        coalesces a backlog)."""
        run = handover.run
        with self._lock:
            self._handed[(run.job, run.key)] = handover
        return Fire(run.job, run.scheduled_time, keep=True)

    def _settle_suspect(self, suspect: Suspect, fires: list[Fire], done: SettlePass) -> None:
        run = suspect.run
        key = (run.job, run.key)
        spec = self._specs[run.job]
        term = self._leadership.current_term()
        if term is None or term.token != suspect.leader_token:
            self._forget_suspect(key, suspect)
            return
        stored = self._backend.lookup(self._cluster, run.job, run.scheduled_time)
        theirs = stored is not None and stored.attempt == run.attempt
        if self._too_late(run, spec):
            self._forget_suspect(key, suspect)
            if theirs and stored is not None and stored.outcome == "claimed":
                # Never started (start is fenced by our lease) and never given back.
                lost = stored.finished("lost", self._clock.now(), NEVER_STARTED)
                self._backend.finish(self._cluster, lost)
                done.note("recorded_lost", run.job)
            return
        if theirs and stored is not None and stored.outcome == "claimed":
            # Still its claimant's: maybe given back later; look again after a backoff.
            tries = suspect.tries + 1
            due = self._clock.monotonic() + backoff(tries)
            with self._lock:
                if self._suspects.get(key) is suspect:
                    self._suspects[key] = replace(suspect, tries=tries, due=due)
            return
        self._forget_suspect(key, suspect)
        if stored is not None:
            return  # started after all (before our term), finished, or claimed again
        if spec.catch_up == "latest":
            newest = self._backend.history(self._cluster, run.job, 1)
            if newest and newest[0].key > run.key:
                return  # a newer fire ran: "latest" does not go back for this one
        self._log.debug(
            "catch_up",
            job=run.job,
            missed=1,
            policy=spec.catch_up,
            fires=[run.scheduled_time.isoformat()],
            reason="given back by its claimant",
        )
        fires.append(Fire(run.job, run.scheduled_time))
        done.note("given_back", run.job)  # counted in the pass's claims_settled line

    def _withdraw(self, run: RunRecord, reason: str) -> bool:
        if not self._backend.unclaim(self._cluster, run):
            return False
        self._metrics.claims.labels("withdrawn").inc()
        self._log.debug(
            "claim_withdrawn",
            job=run.job,
            scheduled_time=run.scheduled_time.isoformat(),
            token=run.token,
            reason=reason,
        )
        return True

    def _forget_doubt(self, doubt: Doubt) -> bool:
        """Drop ``doubt``; ``False`` if it was already gone or replaced."""
        with self._lock:
            if self._doubts.get(doubt.run.attempt) is doubt:
                del self._doubts[doubt.run.attempt]
                return True
            return False

    def _forget_suspect(self, key: Key, suspect: Suspect) -> None:
        with self._lock:
            if self._suspects.get(key) is suspect:
                del self._suspects[key]

    def _too_late(self, run: RunRecord, spec: JobSpec) -> bool:
        late = (self._clock.now() - run.scheduled_time).total_seconds()
        return late > spec.misfire_grace
