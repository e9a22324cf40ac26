"""Claims whose fate this replica does not know, and fires a deposed leader gave back.

A claim is one backend write. When its answer never arrives (a slow or broken link: the
call times out) it may still have landed, and then the fire is claimed but nobody runs it —
at most once, but lost. The same holds for a claim made just before leadership was lost
(the job was never started). :class:`Recovery` settles both kinds once the backend answers:

* the claim is found under this replica's current term: the lane runs it (late, within
  ``misfire_grace``) without claiming again;
* it is found under a term this replica no longer leads: the claim is withdrawn
  (:meth:`~scheduler.backends.base.LeaseBackend.unclaim`), so whoever leads runs the fire
  from its catch-up — only the claimant can know that the job never started;
* it is not found: it never landed; a leader claims it again through its lane.

The other side: a new leader finds runs left ``running`` under an older token (orphans).
It cannot tell a started job from a claim whose answer was lost, so it never runs them, but
it watches those within ``misfire_grace`` (*suspects*) and runs any whose claimant gives it
back while there is still time.

And fires skipped while the backend was unconfirmed are caught up in the same term once it
answers again (a term that survives a short outage would otherwise just miss them).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.clock import Clock
from scheduler.elector import Elector, Term
from scheduler.errors import BackendError
from scheduler.jobs import JobSpec
from scheduler.runs import RunRecord, fire_key

#: Seconds between passes while something is left to settle. A pass costs one read per
#: unsettled fire, and there are only ever a few.
SETTLE_INTERVAL = 0.25

#: The message a new leader writes on a run it found ``running`` under an older token.
ORPHAN_MESSAGE = "its replica stopped before the run ended"

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _Doubt:
    run: RunRecord  # the claim as sent, ours and never started
    since: float  # monotonic time the doubt arose


@dataclass(frozen=True, slots=True)
class _Suspect:
    run: RunRecord  # the orphaned record, under its claimant's token
    leader_token: int  # the term that watches it


class Recovery:
    """The bookkeeping of unsettled claims for one :class:`~scheduler.runner.Runner`.

    Args:
        specs: the jobs by name (``misfire_grace``, ``catch_up``).
        elector: whether (and in which term) this replica leads.
        backend: where the claims live.
        cluster: election name.
        clock: wall clock for fire instants.
        submit: hands a fire to its job's lane (``submit(job, fire, keep)``; ``keep``: never
            coalesced away, for a claim already made).
        log: the runner's logger.
        wake: set whenever there is something to settle.
    """

    def __init__(
        self,
        specs: Mapping[str, JobSpec],
        elector: Elector,
        backend: LeaseBackend,
        cluster: str,
        clock: Clock,
        submit: Callable[[str, datetime, bool], None],
        log: Any,
        wake: threading.Event,
    ) -> None:
        self._specs = specs
        self._elector = elector
        self._backend = backend
        self._cluster = cluster
        self._clock = clock
        self._submit = submit
        self._log = log
        self._lock = threading.Lock()
        self._doubts: dict[Key, _Doubt] = {}  # ours, never started; fate unknown
        self._adopted: dict[Key, RunRecord] = {}  # ours, landed in the term we lead
        self._suspects: dict[Key, _Suspect] = {}  # others', maybe given back
        self._recheck: Term | None = None  # a term that skipped fires: catch up
        self.wake = wake

    # -- what the runner reports --------------------------------------------------------------

    def doubt(self, run: RunRecord) -> None:
        """``run`` was sent as a claim without an answer, or claimed and then not started."""
        with self._lock:
            self._doubts[(run.job, run.key)] = _Doubt(run, self._clock.monotonic())
        self.wake.set()

    def claimed(self, run: RunRecord) -> None:
        """The lane claimed ``run``'s fire: nothing about it is in doubt any more."""
        with self._lock:
            self._doubts.pop((run.job, run.key), None)

    def take_adopted(self, job: str, fire: datetime, term: Term | None) -> RunRecord | None:
        """The confirmed claim of this fire, to run without claiming again, if it is of
        ``term``; a claim of a term no longer led goes back to be withdrawn."""
        key = (job, fire_key(fire))
        with self._lock:
            run = self._adopted.pop(key, None)
            if run is None or (term is not None and run.token == term.token):
                return run
            self._doubts[key] = _Doubt(run, self._clock.monotonic())
        self.wake.set()
        return None

    def suspect(self, orphan: RunRecord, term: Term) -> None:
        """A new leader found ``orphan``; run its fire if the claimant gives it back."""
        spec = self._specs.get(orphan.job)
        if spec is None or spec.catch_up == "none" or self._too_late(orphan, spec):
            return
        with self._lock:
            self._suspects[(orphan.job, orphan.key)] = _Suspect(orphan, term.token)
        self.wake.set()

    def skipped(self, term: Term) -> None:
        """``term`` skipped a fire (or lost a claim) because the backend did not answer."""
        with self._lock:
            self._recheck = term
        self.wake.set()

    def pending(self) -> bool:
        with self._lock:
            return bool(self._doubts or self._suspects or self._recheck)

    # -- settling ------------------------------------------------------------------------------

    def settle(self) -> Term | None:
        """One pass over everything unsettled (call while the backend answers).

        Returns:
            The current term if it skipped fires during the outage and should now catch up.
        """
        with self._lock:
            doubts = list(self._doubts.values())
            suspects = list(self._suspects.values())
        for doubt in doubts:
            try:
                self._settle_doubt(doubt)
            except BackendError as exc:
                self._log.warning("claim_unsettled", job=doubt.run.job, error=str(exc))
                return None
        for suspect in suspects:
            try:
                self._settle_suspect(suspect)
            except BackendError as exc:
                self._log.warning("claim_unsettled", job=suspect.run.job, error=str(exc))
                return None
        with self._lock:
            term, self._recheck = self._recheck, None
        return term if term is not None and self._elector.current_term() is term else None

    def withdraw_all(self) -> None:
        """On shutdown: give back every claim in doubt that is ours (one bounded pass)."""
        with self._lock:
            doubts = [*(d.run for d in self._doubts.values()), *self._adopted.values()]
            self._doubts.clear()
            self._adopted.clear()
        for run in doubts:
            try:
                self._withdraw(run, "replica shut down")
            except BackendError as exc:
                self._log.warning("claim_unsettled", job=run.job, error=str(exc))

    def _settle_doubt(self, doubt: _Doubt) -> None:
        run = doubt.run
        key = (run.job, run.key)
        spec = self._specs[run.job]
        log = self._log.bind(job=run.job, scheduled_time=run.scheduled_time.isoformat())
        stored = self._backend.lookup(self._cluster, run.job, run.scheduled_time)
        if self._too_late(run, spec):
            self._forget_doubt(key, doubt)
            if stored is not None and stored.token == run.token and stored.outcome == "running":
                # Nobody can run it any more; say so rather than leave it "running".
                lost = stored.finished("lost", self._clock.now(), "claimed but never started")
                self._backend.finish(self._cluster, lost)
            return
        term = self._elector.current_term()
        if stored is None:
            # Not landed (yet: a delayed request may still arrive, so keep watching). A
            # leader claims it again; a follower leaves it to the leader's catch-up, and
            # stops watching once the lease the claim was sent under has expired on the
            # server for sure: a claim arriving later fails its lease check.
            if term is not None:
                self._submit(run.job, run.scheduled_time, False)
            elif self._clock.monotonic() - doubt.since > self._landing_bound():
                self._forget_doubt(key, doubt)
            return
        if stored.token != run.token:
            self._forget_doubt(key, doubt)  # someone else's claim: the fire is theirs
            return
        if term is not None and term.token == run.token:
            with self._lock:
                if self._doubts.get(key) is not doubt:
                    return  # replaced meanwhile (a newer claim of the fire went unanswered)
                del self._doubts[key]
                self._adopted[key] = stored
            log.info("claim_confirmed", token=run.token)
            self._elector.metrics.claims.labels("confirmed_late").inc()
            self._submit(run.job, run.scheduled_time, True)
            return
        self._forget_doubt(key, doubt)
        self._withdraw(stored, "leadership lost before the start")
        if term is not None:
            self._submit(run.job, run.scheduled_time, False)  # a newer term of ours: claim afresh

    def _settle_suspect(self, suspect: _Suspect) -> None:
        run = suspect.run
        key = (run.job, run.key)
        spec = self._specs[run.job]
        term = self._elector.current_term()
        if term is None or term.token != suspect.leader_token or self._too_late(run, spec):
            self._forget_suspect(key, suspect)
            return
        stored = self._backend.lookup(self._cluster, run.job, run.scheduled_time)
        if stored is not None and stored.token == run.token:
            return  # still its claimant's: maybe running, maybe given back later
        self._forget_suspect(key, suspect)
        if stored is not None:
            return  # claimed again meanwhile
        if spec.catch_up == "latest":
            newest = self._backend.history(self._cluster, run.job, 1)
            if newest and newest[0].key > run.key:
                return  # a newer fire ran: "latest" does not go back for this one
        self._log.info(
            "catch_up",
            job=run.job,
            missed=1,
            policy=spec.catch_up,
            fires=[run.scheduled_time.isoformat()],
            reason="given back by its claimant",
        )
        self._submit(run.job, run.scheduled_time, False)

    def _withdraw(self, run: RunRecord, reason: str) -> None:
        if self._backend.unclaim(self._cluster, run):
            self._elector.metrics.claims.labels("withdrawn").inc()
            self._log.warning(
                "claim_withdrawn",
                job=run.job,
                scheduled_time=run.scheduled_time.isoformat(),
                token=run.token,
                reason=reason,
            )

    def _forget_doubt(self, key: Key, doubt: _Doubt) -> None:
        with self._lock:
            if self._doubts.get(key) is doubt:
                del self._doubts[key]

    def _landing_bound(self) -> float:
        """Seconds after which a claim sent before a doubt arose can no longer land."""
        timings = self._elector.timings
        return timings.lease_ttl + timings.op_timeout

    def _forget_suspect(self, key: Key, suspect: _Suspect) -> None:
        with self._lock:
            if self._suspects.get(key) is suspect:
                del self._suspects[key]

    def _too_late(self, run: RunRecord, spec: JobSpec) -> bool:
        late = (self._clock.now() - run.scheduled_time).total_seconds()
        return late > spec.misfire_grace
