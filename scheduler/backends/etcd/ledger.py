"""The run ledger on etcd: one key per claimed fire, written in transactions fenced by the
leader key.

**Claims.** One transaction per :data:`CHUNK` runs: its compares are the lease's (the
leader key's create revision is the token and its value the holder's id, see
:func:`~.lease.holder_compares`); its success branch is one nested transaction per run
(etcd >= 3.3) comparing the run key's create revision with 0, putting the record and
deleting what the claim trims. A lost lease fails the whole transaction before anything is
written; a fire already claimed fails only its nested transaction, which reads the record
back (a resend of the same attempt is answered with it).

**Trimming** follows :func:`~scheduler.backends.rules.select_trim` exactly: before the
transaction one read transaction fetches, per job of the chunk, the job's record count and
its :data:`OLDEST` oldest records (a window reaching past them reads more), and for a job
with several runs in the chunk which of those fires exist already; the claims are then
planned one by one as single calls would make them, and each claim's deletes go into its
own nested transaction (applied only if that claim lands). Only records finished when read are ever
deleted, and a finished record never changes state again, so a write racing the plan can
make one claim trim a record less or more than the rule, never an unfinished one. A
chunk ends early where a fire comes twice or a planned delete meets a later claim, so
one transaction never writes a key twice (etcd refuses that).

**Limits.** etcd refuses a transaction with more than ``--max-txn-ops`` (default 128)
operations in a branch, a nested transaction counting against what its parent's branch
left: :data:`CHUNK` (64 nested transactions, or two ranges per job in the read) and
:data:`TRIM_PER_CLAIM` (the rest, 64, per claim) keep within it.

Starts, outcomes and give-backs read the records, judge them here, and write them in a
transaction comparing each record's mod revision with the one read (starts also under the
lease's compares): a record changed in between is judged again from what the failed
compare read back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.backends.base import SingleDefaults, StartAnswer
from scheduler.backends.etcd.gateway import (
    Gateway,
    b64,
    create_is,
    delete,
    get,
    mod_is,
    nested,
    put,
    unb64,
)
from scheduler.backends.etcd.keys import Keys, fire_of
from scheduler.backends.etcd.lease import holder_compares, lost_reason
from scheduler.backends.floors import TokenFloors
from scheduler.backends.rules import trim_window, trimmable
from scheduler.backends.runs import Retention, RunRecord, fire_key
from scheduler.backends.states import ClaimRefusal
from scheduler.errors import BackendUnavailable, ClaimLost, LeaseLost
from scheduler.leadership.lease import Lease

#: The most runs (and jobs) one claim or start transaction carries: the read before it
#: takes two ranges per job, within etcd's default ``--max-txn-ops`` of 128.
CHUNK = 64
#: The most runs one outcome transaction carries (one nested txn each; etcd counts a
#: nested transaction's operations against what its parent left of the 128).
FINISH_CHUNK = 64
#: The oldest records of each job read with their values before a claim: the trim
#: candidates of a history at its limit (older ones are fetched when a window needs them).
OLDEST = 8
#: The most deletes one claim makes: with its put, one nested transaction within what
#: :data:`CHUNK` nested ones leave of etcd's 128 operations. A larger backlog, after
#: ``history_limit`` was lowered a long way, goes over the following claims.
TRIM_PER_CLAIM = 63


def _kvs(response: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``kvs`` of one ``response_range`` inside a txn's responses."""
    return list(response.get("response_range", {}).get("kvs", []))


@dataclass
class _History:
    """What the plan knows of one job's records.

    Attributes:
        total: how many records the job has (etcd's ``count`` of its prefix).
        oldest: the outcomes of its oldest records, by fire: every record older than the
            newest of them is among them (a prefix of the job's keys in order).
        existing: the fires of this chunk's runs that already have a record (read only for
            a job with several runs in the chunk, where one claim's answer changes what the
            next trims).
    """

    total: int
    oldest: dict[int, str | None]
    existing: set[int] = field(default_factory=set)

    @property
    def complete(self) -> bool:
        return len(self.oldest) >= self.total


class _NeedOlder(Exception):
    """The plan needs more of ``job``'s oldest records than were read (a window reaching
    past them)."""

    def __init__(self, job: str, count: int) -> None:
        self.job = job
        self.count = count


class EtcdLedger(SingleDefaults):
    """The :class:`~scheduler.backends.base.RunLedger` role, single calls and batches.

    Args:
        gateway: the gateway client.
        keys: the key layout.
        floors: the token floors shared with the lease store.
    """

    def __init__(self, gateway: Gateway, keys: Keys, floors: TokenFloors) -> None:
        self._gw = gateway
        self._keys = keys
        self._floors = floors

    # -- claims -----------------------------------------------------------------------------------

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """Claim ``runs``: one read and one transaction per chunk (see the module docstring).

        Returns:
            Per run, what :meth:`claim` answers, in order.
        """
        answers: list[RunRecord | None] = []
        done = 0
        while done < len(runs):
            plan = self._plan(lease.name, runs[done : done + CHUNK], retention)
            answers += self._claim_chunk(lease, plan)
            done += len(plan)
        return answers

    def _plan(
        self, name: str, window: Sequence[RunRecord], retention: Retention
    ) -> list[tuple[RunRecord, list[int]]]:
        """The claims of ``window`` one transaction can carry, each with its trims."""
        runs_of: dict[str, list[int]] = {}
        for run in window:
            runs_of.setdefault(run.job, []).append(run.key)
        ops: list[dict[str, Any]] = []
        for job, fires in runs_of.items():
            prefix = self._keys.job(name, job)
            ops.append(get(prefix, prefix=True, limit=str(OLDEST)))
            if len(fires) > 1:
                first = self._keys.run(name, job, min(fires))
                after = self._keys.run(name, job, max(fires) + 1)
                ops.append(
                    {
                        "request_range": {
                            "key": b64(first),
                            "range_end": b64(after),
                            "keys_only": True,
                        }
                    }
                )
        responses = iter(self._gw.txn([], ops)["responses"])
        histories: dict[str, _History] = {}
        for job, fires in runs_of.items():
            answer = next(responses).get("response_range", {})
            histories[job] = _History(int(answer.get("count", 0) or 0), self._outcomes(answer))
            if len(fires) > 1:
                histories[job].existing = {
                    fire_of(unb64(kv["key"])) for kv in _kvs(next(responses))
                }
        while True:
            try:
                return self._simulate(window, histories, retention)
            except _NeedOlder as need:
                prefix = self._keys.job(name, need.job)
                answer = self._gw.range(prefix, prefix=True, limit=str(need.count))
                history = histories[need.job]
                history.total = int(answer.get("count", 0) or 0)
                history.oldest = self._outcomes(answer)

    def _outcomes(self, answer: dict[str, Any]) -> dict[int, str | None]:
        """Fire -> outcome of the records of a range answer (``None``: unreadable, kept)."""
        found: dict[int, str | None] = {}
        for kv in answer.get("kvs", []):
            try:
                outcome: str | None = RunRecord.from_json(unb64(kv.get("value", ""))).outcome
            except (ValueError, KeyError, TypeError):
                outcome = None
            found[fire_of(unb64(kv["key"]))] = outcome
        return found

    def _simulate(
        self, window: Sequence[RunRecord], histories: dict[str, _History], retention: Retention
    ) -> list[tuple[RunRecord, list[int]]]:
        """Plan the claims of ``window`` in order, as single claims would go (the rule of
        :func:`~scheduler.backends.rules.select_trim` on what was read)."""
        totals = {job: history.total for job, history in histories.items()}
        oldest = {job: dict(history.oldest) for job, history in histories.items()}
        added: dict[str, set[int]] = {job: set() for job in histories}
        touched: set[tuple[str, int]] = set()
        plan: list[tuple[RunRecord, list[int]]] = []
        for run in window:
            if (run.job, run.key) in touched:
                break  # a fire twice, or trimmed by an earlier claim: the next chunk
            history = histories[run.job]
            trims: list[int] = []
            if run.key not in history.existing:
                known, new = oldest[run.job], added[run.job]
                cut = trim_window(totals[run.job] + 1, run.key, retention, TRIM_PER_CLAIM)
                candidates = sorted(
                    [fire for fire in known if fire < cut.cutoff]
                    + [fire for fire in new if fire < cut.cutoff]
                )[: cut.count]
                # Records not read are all newer than the newest one read: a window that
                # may reach them needs more of the oldest first.
                edge = max(history.oldest, default=None)
                reaches = (len(candidates) < cut.count and (edge is None or edge < cut.cutoff)) or (
                    bool(candidates) and edge is not None and candidates[-1] > edge
                )
                if reaches and not history.complete:
                    read = len(history.oldest)
                    raise _NeedOlder(
                        run.job, min(history.total, max(2 * read, read + cut.count + len(new)))
                    )
                trims = [fire for fire in candidates if fire in known and trimmable(known[fire])]
                new.add(run.key)
                totals[run.job] += 1 - len(trims)
                for fire in trims:
                    del known[fire]
            touched.add((run.job, run.key))
            touched.update((run.job, fire) for fire in trims)
            plan.append((run, trims))
        return plan

    def _claim_chunk(
        self, lease: Lease, plan: list[tuple[RunRecord, list[int]]]
    ) -> list[RunRecord | None]:
        claims = []
        for run, trims in plan:
            key = self._keys.run(lease.name, run.job, run.key)
            claims.append(
                nested(
                    [create_is(key, 0)],
                    [
                        put(key, run.to_json()),
                        *(delete(self._keys.run(lease.name, run.job, fire)) for fire in trims),
                    ],
                    [get(key)],
                )
            )
        answer = self._gw.txn(
            holder_compares(self._keys, lease),
            claims,
            [get(self._keys.holder(lease.name))],
        )
        if not answer["succeeded"]:
            raise LeaseLost(lease.name, lost_reason(_kvs(answer["responses"][0]), lease))
        self._floors.observe(lease.name, lease.token)
        answers: list[RunRecord | None] = []
        for (run, _), response in zip(plan, answer["responses"], strict=True):
            inner = response.get("response_txn", {})
            if inner.get("succeeded"):
                answers.append(run)
                continue
            kvs = _kvs(inner.get("responses", [{}])[0])
            stored = self._parse(run.job, kvs[0]) if kvs else None
            answers.append(stored if stored is not None and stored.attempt == run.attempt else None)
        return answers

    # -- starts -----------------------------------------------------------------------------------

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        """Start ``runs``: per chunk, a read under the lease's compares, then one
        transaction under them again, each record compared with its mod revision read."""
        answers: list[StartAnswer] = []
        done = 0
        while done < len(runs):
            chunk: list[RunRecord] = []
            seen: set[tuple[str, int]] = set()
            for run in runs[done : done + CHUNK]:
                if (run.job, run.key) in seen:
                    break
                seen.add((run.job, run.key))
                chunk.append(run)
            answers += self._start_chunk(lease, chunk)
            done += len(chunk)
        return answers

    def _start_chunk(self, lease: Lease, chunk: list[RunRecord]) -> list[StartAnswer]:
        keys = [self._keys.run(lease.name, run.job, run.key) for run in chunk]
        compares = holder_compares(self._keys, lease)
        lost = [get(self._keys.holder(lease.name))]
        read = self._gw.txn(compares, [get(key) for key in keys], lost)
        if not read["succeeded"]:
            raise LeaseLost(lease.name, lost_reason(_kvs(read["responses"][0]), lease))
        answers: list[StartAnswer | None] = []
        writes: list[dict[str, Any]] = []
        for run, key, response in zip(chunk, keys, read["responses"], strict=True):
            kvs = _kvs(response)
            refusal = self._refusal(run, kvs)
            if refusal is not None:
                answers.append(refusal)
                continue
            answers.append(None)
            writes.append(
                nested([mod_is(key, kvs[0]["mod_revision"])], [put(key, run.to_json())], [get(key)])
            )
        if not writes:
            return [answer for answer in answers if answer is not None]
        written = self._gw.txn(compares, writes, lost)
        if not written["succeeded"]:
            raise LeaseLost(lease.name, lost_reason(_kvs(written["responses"][0]), lease))
        results = iter(written["responses"])
        final: list[StartAnswer] = []
        for run, answer in zip(chunk, answers, strict=True):
            if answer is not None:
                final.append(answer)
                continue
            inner = next(results).get("response_txn", {})
            if inner.get("succeeded"):
                final.append(run)
            else:
                kvs = _kvs(inner.get("responses", [{}])[0])
                final.append(
                    self._refusal(run, kvs)
                    or ClaimLost(run.job, run.scheduled_time.isoformat(), ClaimRefusal.NOT_CLAIMED)
                )
        return final

    def _refusal(self, run: RunRecord, kvs: list[dict[str, Any]]) -> ClaimLost | None:
        """Why ``run`` cannot start over the record ``kvs`` holds; ``None`` if it can."""
        reason: ClaimRefusal | None = None
        if not kvs:
            reason = ClaimRefusal.GONE
        else:
            stored = self._parse(run.job, kvs[0])
            if stored.attempt != run.attempt:
                reason = ClaimRefusal.OTHER_ATTEMPT
            elif stored.outcome != "claimed":
                reason = ClaimRefusal.NOT_CLAIMED
        if reason is None:
            return None
        return ClaimLost(run.job, run.scheduled_time.isoformat(), reason)

    # -- outcomes, lookups, give-backs ------------------------------------------------------------

    def finish(self, name: str, run: RunRecord) -> None:
        """Store the outcome of ``run`` over the record ``run.attempt`` wrote, if any."""
        self.finish_many(name, [run])

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """Store the outcomes of ``runs`` (of two outcomes of one attempt, the later): per
        chunk, one read and one transaction of puts compared with their mod revisions."""
        latest = {(run.job, run.key, run.attempt): run for run in runs if run.attempt}
        pending = list(latest.values())
        for start in range(0, len(pending), FINISH_CHUNK):
            chunk = pending[start : start + FINISH_CHUNK]
            keys = [self._keys.run(name, run.job, run.key) for run in chunk]
            read = self._gw.txn([], [get(key) for key in keys])
            writes = []
            for run, key, response in zip(chunk, keys, read["responses"], strict=True):
                kvs = _kvs(response)
                if not kvs or self._parse(run.job, kvs[0]).attempt != run.attempt:
                    continue  # trimmed, or another attempt's: left alone
                writes.append(
                    nested([mod_is(key, kvs[0]["mod_revision"])], [put(key, run.to_json())])
                )
            if writes:
                self._gw.txn([], writes)

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The run record of (``job``, ``scheduled_time``), or ``None``."""
        kvs = self._gw.range(self._keys.run(name, job, fire_key(scheduled_time))).get("kvs", [])
        return self._parse(job, kvs[0]) if kvs else None

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Delete the record of ``run``'s fire if ``run.attempt`` wrote it and it is still
        ``claimed`` (compared with the mod revision read, in one transaction)."""
        if not run.attempt:
            return False
        key = self._keys.run(name, run.job, run.key)
        kvs = self._gw.range(key).get("kvs", [])
        if not kvs:
            return False
        stored = self._parse(run.job, kvs[0])
        if stored.attempt != run.attempt or stored.outcome != "claimed":
            return False
        answer = self._gw.txn([mod_is(key, kvs[0]["mod_revision"])], [delete(key)])
        return bool(answer["succeeded"])

    def history_many(
        self, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]:
        """The newest ``limit`` run records of each of ``jobs``: one read transaction of
        descending ranges per :data:`FINISH_CHUNK` jobs."""
        wanted = list(dict.fromkeys(jobs))
        found: dict[str, list[RunRecord]] = {job: [] for job in wanted}
        if limit <= 0:
            return found
        for start in range(0, len(wanted), FINISH_CHUNK):
            chunk = wanted[start : start + FINISH_CHUNK]
            ops = [
                get(
                    self._keys.job(name, job),
                    prefix=True,
                    limit=str(limit),
                    sort_order="DESCEND",
                    sort_target="KEY",
                )
                for job in chunk
            ]
            answer = self._gw.txn([], ops)
            for job, response in zip(chunk, answer["responses"], strict=True):
                found[job] = [self._parse(job, kv) for kv in _kvs(response)]
        return found

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys of ``job`` claimed with fire instants in ``[since, until]``."""
        first = self._keys.run(name, job, fire_key(since))
        after = self._keys.run(name, job, fire_key(until) + 1)
        answer = self._gw.call(
            "kv/range", {"key": b64(first), "range_end": b64(after), "keys_only": True}
        )
        return {fire_of(unb64(kv["key"])) for kv in answer.get("kvs", [])}

    def _parse(self, job: str, kv: dict[str, Any]) -> RunRecord:
        try:
            return RunRecord.from_json(unb64(kv.get("value", "")))
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                self._gw.url, f"corrupt run record for job {job!r}: {exc}"
            ) from exc


__all__ = ["CHUNK", "FINISH_CHUNK", "OLDEST", "TRIM_PER_CLAIM", "EtcdLedger"]
