"""The claims layer's backend calls: a batch of claims or of starts in one call, and what
each answer means for each fire in it.

:class:`~scheduler.firing.claims.Claims` decides which fires to send (one attempt per fire
per term, none paused, late or in the dark); :class:`Sender` sends them, one
:meth:`~scheduler.backends.base.RunLedger.claim_many` per ``misfire_grace`` and one
:meth:`~scheduler.backends.base.RunLedger.start_many` per term, and sorts the answers:
confirmed, claimed elsewhere, refused (the lease is lost: leadership is told), or in doubt
(no answer: :class:`~scheduler.firing.recovery.Recovery` settles it later). A batch that
fails is logged once (``claim_failed``, ``start_failed``, ``claim_refused``,
``fire_abandoned``: with the count, the instant and the jobs, :func:`describe_batch`), never
once per fire.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.backends.runs import Retention, RunRecord
from scheduler.errors import BackendError, ClaimLost, FireNotDue, LeaseLost
from scheduler.firing.recovery import Recovery
from scheduler.firing.tally import SkipReason, Tally
from scheduler.leadership.term import Term
from scheduler.leadership.view import Leadership
from scheduler.ops.metrics import Metrics

__all__ = ["LISTED", "Send", "Sender", "describe_batch"]

#: Job names a batch failure line lists (sorted; ``fires`` always has the full count).
LISTED = 100


def describe_batch(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """The fields that name a batch in one log line: ``fires`` (the count), ``job`` and
    ``scheduled_time`` for a single fire as before, else ``jobs`` (sorted, the first
    :data:`LISTED`) and ``scheduled_time`` (or ``scheduled_times``, when they differ)."""
    fields: dict[str, Any] = {"fires": len(runs)}
    jobs = sorted({run.job for run in runs})
    if len(jobs) == 1:
        fields["job"] = jobs[0]
    else:
        fields["jobs"] = jobs[:LISTED]
    instants = sorted({run.scheduled_time for run in runs})
    if len(instants) == 1:
        fields["scheduled_time"] = instants[0].isoformat()
    else:
        fields["scheduled_times"] = [t.isoformat() for t in instants[:LISTED]]
    return fields


@dataclass(frozen=True, slots=True)
class Send:
    """One fire of a claim batch: where its answer goes, and the attempt sent."""

    index: int
    run: RunRecord


class Sender:
    """Sends a batch of claims or starts in one backend call and sorts the answers.

    Args:
        backend: the run ledger.
        leadership: told of every failed call (the lease lost, or no answer).
        recovery: where fires whose fate is unknown are left to be settled.
        tally: where fires not claimed or started are counted.
        metrics: where claims are counted (``baton_claims``, ``baton_claim_batch_size``).
        log: the runner's logger.
        history_limit: runs kept per job.
    """

    def __init__(
        self,
        backend: LeaseBackend,
        leadership: Leadership,
        recovery: Recovery,
        tally: Tally,
        metrics: Metrics,
        log: Any,
        history_limit: int,
    ) -> None:
        self._backend = backend
        self._leadership = leadership
        self._recovery = recovery
        self._tally = tally
        self._metrics = metrics
        self._log = log
        self._history_limit = history_limit

    def claim_batch(
        self,
        term: Term,
        group: list[Send],
        grace: float,
        answers: list[RunRecord | None],
        skipped: defaultdict[SkipReason, list[str]],
    ) -> None:
        """Claim the fires of ``group`` (one ``misfire_grace``) in one call; their answers go
        to ``answers``, the fires not claimed to ``skipped``."""
        runs = [send.run for send in group]
        jobs = [run.job for run in runs]
        retention = Retention(limit=self._history_limit, protect=grace * 2)
        claims = self._metrics.claims
        self._metrics.claim_batch.observe(len(runs))
        try:
            stored = self._send(term, runs, retention, grace)
        except LeaseLost as exc:
            # Checked before anything of the batch was stored (the contract).
            claims.labels("lease_lost").inc(len(runs))
            self._log.warning(
                "claim_refused", reason=exc.reason, token=term.token, **describe_batch(runs)
            )
            self._leadership.report(exc, term)
            skipped[SkipReason.LEASE_LOST] += jobs
            return
        except BackendError as exc:
            # No answer: the claims may have landed all the same. Not run now; settled once
            # the backend answers (run late, or given back).
            claims.labels("error").inc(len(runs))
            self._log.warning(
                "claim_failed", error=str(exc), token=term.token, **describe_batch(runs)
            )
            # Unconfirmed until a call succeeds; refused for good: leadership ends.
            self._leadership.report(exc, term, in_doubt=True)
            self._recovery.doubt_many(runs)
            self._recovery.skipped(term)
            self._tally.in_doubt(len(runs))
            return
        if stored is None:
            # Not due by the backend's clock within the grace: missed. A batch carried in
            # several chunks may have stored some of it: settled as doubts.
            if len(runs) > 1:
                self._recovery.doubt_many(runs)
            skipped[SkipReason.MISSED] += jobs
            return
        confirmed: list[RunRecord] = []
        duplicates = 0
        for send, record in zip(group, stored, strict=True):
            if record is None:
                duplicates += 1
                self._log.debug(
                    "fire_already_claimed",
                    job=send.run.job,
                    scheduled_time=send.run.scheduled_time.isoformat(),
                    token=term.token,
                )
                skipped[SkipReason.CLAIMED_ELSEWHERE].append(send.run.job)
            elif record.outcome != "claimed":
                # A resend answered with this attempt's record already started or ended: its
                # earlier send and start landed unanswered. Settled as a doubt (never run
                # twice).
                self._recovery.doubt(send.run)
            else:
                confirmed.append(record)
                answers[send.index] = record
        if duplicates:
            claims.labels("duplicate").inc(duplicates)
        if confirmed:
            claims.labels("claimed").inc(len(confirmed))
            self._recovery.claimed_many(confirmed)
            self._tally.claimed(len(confirmed))

    def _send(
        self, term: Term, runs: list[RunRecord], retention: Retention, grace: float
    ) -> list[RunRecord | None] | None:
        """Claim ``runs``; if the backend's clock says one is not due yet (this replica's
        clock runs ahead), wait by the backend's clock and send the batch again (the same
        attempts: idempotent), within ``grace``. ``None``: given up."""
        waited = 0.0
        while True:
            try:
                return self._backend.claim_many(term.lease, runs, retention)
            except FireNotDue as exc:
                if waited + exc.wait > grace or self._leadership.current_term() is not term:
                    self._log.warning(
                        "fire_not_due_given_up", waited=round(waited, 3), **describe_batch(runs)
                    )
                    return None
                self._log.warning(
                    "fire_not_due", wait=round(exc.wait, 3), detail="clock ahead", fires=len(runs)
                )
                time.sleep(exc.wait)
                waited += exc.wait

    def start_batch(
        self,
        term: Term,
        runs: list[RunRecord],
        indexes: list[int],
        answers: list[RunRecord | None],
        now: datetime,
    ) -> None:
        """Start ``runs`` (claims of ``term``) in one call; each answer goes to
        ``answers[indexes[i]]``."""
        try:
            results = self._backend.start_many(term.lease, [run.started_now(now) for run in runs])
        except LeaseLost as exc:
            self._log.warning(
                "fire_abandoned",
                reason=f"lease lost before the start: {exc.reason}",
                token=term.token,
                **describe_batch(runs),
            )
            self._leadership.report(exc, term)
            self._recovery.doubt_many(runs)  # still claimed: given back once settled
            self._tally.skipped(SkipReason.ABANDONED, [run.job for run in runs])
            return
        except BackendError as exc:
            # The starts may have landed. Not run now; settled once the backend answers (run
            # in this term, or recorded lost: a started fire is never given back).
            self._log.warning(
                "start_failed", error=str(exc), token=term.token, **describe_batch(runs)
            )
            # Unconfirmed until a call succeeds; refused for good: leadership ends.
            self._leadership.report(exc, term, in_doubt=True)
            self._recovery.doubt_many(runs)
            self._recovery.skipped(term)
            self._tally.in_doubt(len(runs))
            return
        refused: list[str] = []
        for index, run, answer in zip(indexes, runs, results, strict=True):
            if isinstance(answer, ClaimLost):
                self._log.error(
                    "claim_lost",
                    job=run.job,
                    scheduled_time=run.scheduled_time.isoformat(),
                    token=term.token,
                    reason=answer.reason,
                )
                refused.append(run.job)
            else:
                answers[index] = answer
        self._tally.skipped(SkipReason.NOT_STARTED, refused)
