"""The run ledger on a Redlock group: every claim and start needs a majority of primaries.

Each step runs the Redis backend's own script on every primary at once (claims with the
lease and token check and the duplicate check, atomically there), and the answers are
counted per run:

* **claim** (and each run of ``claim_many``): stored when a majority of primaries stored
  it (``claimed``, or ``resent``: this attempt's own record). No two attempts can both
  reach a majority for one fire: two majorities share a primary, and there the second
  claim finds the first one's record. That needs no clock and no lease timing, only that
  the shared primary kept its record (a primary that lost it gets a claim epoch at the
  next acquisition, :mod:`.lease`). When the answers **decide** that a claim failed
  (``None``: other attempts hold it on too many primaries; ``LeaseLost``: the lease is not
  held on a majority; ``FireNotDue``), the minority copies it left are deleted at once
  (the Redis backend's owner- and state-checked ``UNCLAIM_LUA``), so a stray record never
  outlives the call that made it. When they do not decide (primaries that did not answer
  could have made a majority), the call raises
  :class:`~scheduler.errors.BackendUnavailable` and the claim is **in doubt**, settled like
  any unanswered claim: the claimant looks it up (below) and resends the same attempt
  (which completes the majority, or finds it), or claims afresh in a new term.
* **start**: ``running`` on a majority, each primary checking the lease and that the record
  is this attempt's and still ``claimed``; the job runs only then. A start that reached a
  minority is not a start (``ClaimLost`` or in doubt), and a started fire is never given
  back.
* **finish** and **unclaim** go to every primary (no lease); a majority must answer.
* **lookup** reads every primary (a majority must answer) and returns a record only if its
  attempt has copies on a majority of the primaries, the furthest state of those copies:
  a stray minority copy is never taken for a claim (the claimant would run a fire another
  leader may claim). ``None`` then makes the claimant resend (idempotent) or claim afresh,
  both decided by a majority again.
* **history** and **claimed** merge what every answering primary (a majority at least)
  holds: per fire, the attempt with the most copies, in its furthest state; ``claimed`` is
  the union of fire keys (a fire any primary knows is not free for a catch-up).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from scheduler.backends.base import StartAnswer
from scheduler.backends.redlock.primaries import OnPrimaries, Primary
from scheduler.backends.redlock.quorum import Answers, Fanout, most_common
from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.states import ClaimRefusal, LossReason
from scheduler.errors import BackendError, ClaimLost, FireNotDue, LeaseLost
from scheduler.leadership.lease import Lease

#: How far a record has gone: an outcome beats ``running``, which beats ``claimed``.
_PROGRESS = {"claimed": 0, "running": 1}


def _progress(record: RunRecord) -> int:
    return _PROGRESS.get(record.outcome, 2)


def _merge(copies: Sequence[RunRecord]) -> tuple[RunRecord, int]:
    """Of the copies of one fire's records: the attempt with the most copies (then the
    furthest), in its furthest state, and how many copies that attempt has."""
    by_attempt: dict[str, list[RunRecord]] = defaultdict(list)
    for copy in copies:
        by_attempt[copy.attempt].append(copy)
    best = max(
        by_attempt.values(),
        key=lambda group: (len(group), max(_progress(c) for c in group), group[0].attempt),
    )
    return max(best, key=_progress), len(best)


class RedlockLedger(OnPrimaries):
    """The :class:`~scheduler.backends.base.RunLedger` role on a Redlock group.

    Args:
        primaries: the group's primaries (each with the Redis backend's ledger).
        fanout: the shared pool.
        url: the redacted group URL, for messages.
        op_timeout: the bound of one call on one primary.
    """

    def __init__(
        self, primaries: Sequence[Primary], fanout: Fanout, url: str, op_timeout: float
    ) -> None:
        super().__init__(primaries, fanout, url, op_timeout)
        self._n = len(self._primaries)

    def _each(
        self,
        call: Callable[[Primary], object],
        enough: Callable[[Answers[object]], bool] | None = None,
    ) -> Answers[object]:
        answers = self._fan_out(call, enough)
        answers.unexpected()
        return answers

    # -- claims ----------------------------------------------------------------------------

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """Store ``run`` on a majority of primaries (see the module docstring).

        Raises:
            LeaseLost: the lease is not held on a majority (nothing is left stored).
            FireNotDue: the fire is too far ahead of the clocks of too many primaries.
            BackendUnavailable: the answers do not decide (the claim is in doubt).
        """
        answers = self._each(lambda p: [p.ledger.claim(lease, run, retention)], self._all_won(1))
        return self._decide_claims(lease, [run], answers)[0]

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """Claim ``runs``: on each primary the Redis backend's batch (one script call per
        chunk), and per run the answer a majority gives, as :meth:`claim`."""
        if not runs:
            return []
        answers = self._each(
            lambda p: p.ledger.claim_many(lease, runs, retention), self._all_won(len(runs))
        )
        return self._decide_claims(lease, runs, answers)

    def _all_won(self, count: int) -> Callable[[Answers[object]], bool]:
        def enough(answers: Answers[object]) -> bool:
            lists: list[Any] = [value for _, value in answers.ok()]
            return len(lists) >= self.quorum and all(
                sum(1 for value in lists if value[j] is not None) >= self.quorum
                for j in range(count)
            )

        return enough

    def _decide_claims(
        self, lease: Lease, runs: Sequence[RunRecord], answers: Answers[object]
    ) -> list[RunRecord | None]:
        lists = [(i, value) for i, value in answers.ok() if isinstance(value, list)]
        lost = answers.errors(LeaseLost)
        early = answers.errors(FireNotDue)
        unanswered = len(answers.errors(BackendError))
        results: list[RunRecord | None] = []
        failed: list[int] = []
        doubtful = False
        for j, run in enumerate(runs):
            copies = [value[j] for _, value in lists if value[j] is not None]
            if len(copies) >= self.quorum:
                results.append(_merge([*copies, run])[0] if _resent(copies, run) else run)
                continue
            results.append(None)
            failed.append(j)
            doubtful |= len(copies) + unanswered >= self.quorum
        if not failed:
            return results
        if len(lost) > self._n - self.quorum:
            self._withdraw(lease.name, runs, failed, lists)
            reasons = [str(e.reason) for e in lost]  # type: ignore[attr-defined]
            raise LeaseLost(lease.name, LossReason(most_common(reasons, LossReason.EXPIRED)))
        if doubtful:
            raise answers.failure(self._url, "a claim", self.quorum)
        if early and any(
            sum(1 for _, value in lists if value[j] is not None) + len(early) >= self.quorum
            for j in failed
        ):
            self._withdraw(lease.name, runs, failed, lists)
            raise FireNotDue(lease.name, max(e.wait for e in early))  # type: ignore[attr-defined]
        self._withdraw(lease.name, runs, failed, lists)
        return results

    def _withdraw(
        self,
        name: str,
        runs: Sequence[RunRecord],
        failed: list[int],
        lists: Sequence[tuple[int, Any]],
    ) -> None:
        """Delete the minority copies of the failed claims ``failed``; best effort (a copy
        left behind makes that fire look claimed to a catch-up: skipped, never repeated)."""
        strays: dict[int, list[RunRecord]] = defaultdict(list)
        for i, value in lists:
            for j in failed:
                if value[j] is not None and value[j].attempt == runs[j].attempt:
                    strays[i].append(runs[j])
        if not strays:
            return
        self._fanout.each(
            [
                (
                    (
                        lambda p=p, i=i: [p.ledger.unclaim(name, run) for run in strays[i]]  # type: ignore[misc]
                    )
                    if i in strays
                    else None
                )
                for i, p in enumerate(self._primaries)
            ],
            self._op_timeout,
        )

    # -- starts ----------------------------------------------------------------------------

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        """Mark ``run`` running on a majority of primaries.

        Raises:
            LeaseLost: the lease is not held on a majority (checked first on each).
            ClaimLost: too many primaries refused (the most common refusal).
            BackendUnavailable: the answers do not decide.
        """
        answer = self.start_many(lease, [run])[0]
        if isinstance(answer, ClaimLost):
            raise answer
        return answer

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        """Start ``runs``: the Redis backend's batch on each primary, per run the answer of
        a majority, as :meth:`start`."""
        if not runs:
            return []

        def enough(answers: Answers[object]) -> bool:
            lists: list[Any] = [value for _, value in answers.ok()]
            return len(lists) >= self.quorum and all(
                sum(1 for v in lists if isinstance(v[j], RunRecord)) >= self.quorum
                for j in range(len(runs))
            )

        answers = self._each(lambda p: p.ledger.start_many(lease, runs), enough)
        lists = [value for _, value in answers.ok() if isinstance(value, list)]
        lost = answers.errors(LeaseLost)
        if len(lost) > self._n - self.quorum:
            reasons = [str(e.reason) for e in lost]  # type: ignore[attr-defined]
            raise LeaseLost(lease.name, LossReason(most_common(reasons, LossReason.EXPIRED)))
        unanswered = len(answers.errors(BackendError))
        results: list[StartAnswer] = []
        for j, run in enumerate(runs):
            started = sum(1 for value in lists if isinstance(value[j], RunRecord))
            if started >= self.quorum:
                results.append(run)
                continue
            if started + unanswered >= self.quorum:
                raise answers.failure(self._url, "a start", self.quorum)
            refusals = [str(v[j].reason) for v in lists if isinstance(v[j], ClaimLost)]
            reason = ClaimRefusal(most_common(refusals, ClaimRefusal.GONE))
            results.append(ClaimLost(run.job, run.scheduled_time.isoformat(), reason))
        return results

    # -- outcomes, give-backs --------------------------------------------------------------

    def finish(self, name: str, run: RunRecord) -> None:
        """Store ``run``'s outcome on every primary holding its attempt's record.

        Raises:
            BackendUnavailable: fewer than a majority answered (kept, written later).
        """
        self.finish_many(name, [run])

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """Store each outcome of ``runs`` on every primary (the Redis batch on each)."""
        if not runs:
            return
        answers = self._each(
            lambda p: p.ledger.finish_many(name, runs),
            lambda a: len(a.ok()) == self._n,
        )
        if len(answers.ok()) < self.quorum:
            raise answers.failure(self._url, "storing outcomes", self.quorum)

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Delete ``run``'s record on every primary where its attempt left it ``claimed``.

        Returns:
            Whether any primary deleted it.

        Raises:
            BackendUnavailable: fewer than a majority answered and none deleted it.
        """
        answers = self._each(lambda p: p.ledger.unclaim(name, run))
        deleted = any(value is True for _, value in answers.ok())
        if not deleted and len(answers.ok()) < self.quorum:
            raise answers.failure(self._url, "giving a claim back", self.quorum)
        return deleted

    # -- reads -------------------------------------------------------------------------------

    def _read(self, call: Callable[[Primary], object], what: str) -> list[object]:
        answers = self._each(call, lambda a: len(a.ok()) == self._n)
        answered = [value for _, value in answers.ok()]
        if len(answered) < self.quorum:
            raise answers.failure(self._url, what, self.quorum)
        return answered

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The record of the fire whose attempt has copies on a majority of the primaries,
        in its furthest state; ``None`` otherwise (see the module docstring)."""
        answered = self._read(lambda p: p.ledger.lookup(name, job, scheduled_time), "a lookup")
        copies = [value for value in answered if isinstance(value, RunRecord)]
        if not copies:
            return None
        record, count = _merge(copies)
        return record if count >= self.quorum else None

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` records of ``job`` merged over the primaries."""
        if limit <= 0:
            return []
        answered = self._read(lambda p: p.ledger.history(name, job, limit), "reading history")
        return _merged_history(answered, limit)  # type: ignore[arg-type]

    def history_many(
        self, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]:
        """Each job's newest ``limit`` records merged over the primaries (one pipelined
        round trip per primary, all primaries at once)."""
        wanted = list(dict.fromkeys(jobs))
        if limit <= 0 or not wanted:
            return {job: [] for job in wanted}
        answered = self._read(
            lambda p: p.ledger.history_many(name, wanted, limit), "reading history"
        )
        return {
            job: _merged_history([reply[job] for reply in answered], limit)  # type: ignore[index]
            for job in wanted
        }

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """The fire keys any answering primary holds (a majority must answer)."""
        answered = self._read(lambda p: p.ledger.claimed(name, job, since, until), "reading claims")
        return set().union(*answered)  # type: ignore[arg-type]


def _resent(copies: Sequence[RunRecord], run: RunRecord) -> bool:
    """Whether any copy differs from ``run`` (a resend found its own, older record)."""
    return any(copy != run for copy in copies)


def _merged_history(replies: Sequence[list[RunRecord]], limit: int) -> list[RunRecord]:
    by_fire: dict[int, list[RunRecord]] = defaultdict(list)
    for reply in replies:
        for record in reply:
            by_fire[record.key].append(record)
    newest = sorted(by_fire, reverse=True)[:limit]
    return [_merge(by_fire[key])[0] for key in newest]


__all__ = ["RedlockLedger"]
