"""The run ledger on Redis: per job, a hash of run records and a sorted index of fire keys.

Claim, start, finish and unclaim are each one script (:mod:`.scripts`) that checks the
lease (claim, start) and the stored record's attempt and state, then writes. Claims trim by
the rule of :mod:`scheduler.backends.rules`, in Lua, at most
:data:`~scheduler.backends.rules.TRIM_SCAN` candidates per claim.

**Batches.** :meth:`RedisLedger.claim_many`, :meth:`~RedisLedger.start_many` and
:meth:`~RedisLedger.finish_many` send one script call per :data:`BATCH_SIZE` runs
(``CLAIM_MANY_LUA`` and its siblings): the lease is checked once per call, then each run
goes through the very Lua function the single script uses, so a batch answers what the
single calls would one by one. A script holds the (single-threaded) server while it runs:
:data:`BATCH_SIZE` claims keep it for 5-12 ms, and a lease renewal sent meanwhile waits no
longer than that (on its own connection: :mod:`.backend`).
:meth:`~RedisLedger.history_many` pipelines one ``HISTORY_LUA`` call per job: one round
trip for all jobs, and since a pipeline is many commands, not one, the server serves
other clients (the renewal) between them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

import redis as redis_lib

from scheduler.backends.base import StartAnswer
from scheduler.backends.redis.acks import Acks
from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.keys import epoch_key, lease_keys, run_keys
from scheduler.backends.redis.lease import TokenFloors, lease_lost
from scheduler.backends.redis.scripts import CLAIM_ALLOWANCE_MS, HISTORY_LUA, Scripts
from scheduler.backends.rules import TRIM_SCAN, chunks
from scheduler.backends.runs import Retention, RunRecord, fire_key
from scheduler.backends.states import ClaimRefusal
from scheduler.errors import ClaimLost, FireNotDue
from scheduler.leadership.lease import Lease

#: What a Cluster node answers for a slot it no longer serves.
MOVED = (redis_lib.exceptions.MovedError, redis_lib.exceptions.AskError)

#: The most runs one batch script call carries. A claim is four commands in the script
#: (eight when it trims), so 1,000 claims hold the server for 5-12 ms (measured on a
#: 2-core test machine: about 1 % of a 1 s op_timeout); a larger batch is sent in
#: several calls, each checking the lease.
BATCH_SIZE = 1000


def _cutoff(run: RunRecord, retention: Retention) -> str:
    """The trim cutoff of ``run``'s claim: only fire keys below it may be trimmed."""
    return str(run.key - round(retention.protect * 1000))


class _JobKeys:
    """The KEYS of a batch script: a few fixed keys, then each job's keys once, numbered
    from 1 in the order the jobs first appear."""

    def __init__(self, name: str, fixed: Sequence[str], per_job: int) -> None:
        self._name = name
        self._per_job = per_job
        self.keys = list(fixed)
        self._numbers: dict[str, int] = {}

    def number(self, job: str) -> int:
        """``job``'s number in the script, adding its keys the first time."""
        number = self._numbers.get(job)
        if number is None:
            number = self._numbers[job] = len(self._numbers) + 1
            self.keys.extend(run_keys(self._name, job)[: self._per_job])
        return number


class RedisLedger:
    """The :class:`~scheduler.backends.base.RunLedger` role on one client, single calls and
    batches.

    Args:
        client: a client whose calls are bounded and never retried (the shared pool).
        scripts: the scripts registered with ``client``.
        url: the redacted backend URL, used in every error message.
        floors: the token floors shared with the lease store: every token read is observed.
        acks: the replication acknowledgements claims, starts and lookups wait for.
    """

    def __init__(
        self,
        client: redis_lib.Redis,
        scripts: Scripts,
        url: str,
        floors: TokenFloors,
        acks: Acks,
    ) -> None:
        self._acks = acks
        self._client = client
        self._scripts = scripts
        self._url = url
        self._floors = floors

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """Store ``run`` if ``lease`` is held and the fire unclaimed; trim per ``retention``.

        A resend of ``run.attempt`` gets the record that attempt stored.

        Raises:
            LeaseLost: reason ``expired``, ``not-holder`` or ``stale-token``.
            FireNotDue: the fire is more than ``CLAIM_ALLOWANCE`` ahead of the server clock.
        """
        lease_key, info_key, _ = lease_keys(lease.name)
        runs_key, index_key = run_keys(lease.name, run.job)
        with translate_errors(self._url):
            status, detail = self._acks.script(
                self._client,
                lease.name,
                self._scripts.claim,
                [lease_key, info_key, runs_key, index_key, epoch_key(lease.name)],
                [
                    lease.holder.id,
                    str(lease.token),
                    str(run.key),
                    run.to_json(),
                    max(retention.limit, 0),
                    _cutoff(run, retention),
                    CLAIM_ALLOWANCE_MS,
                    run.attempt,
                    TRIM_SCAN,
                ],
            )
        if status == "lost":
            raise lease_lost(lease.name, detail)
        if status == "early":
            raise FireNotDue(lease.name, max(int(detail), 1) / 1000)
        self._floors.observe(lease.name, max(lease.token, run.token))
        return _claimed(run, str(status), detail)

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """Claim ``runs`` with one ``CLAIM_MANY_LUA`` call per :data:`BATCH_SIZE`, each
        checking the lease once and every fire's due time before it writes anything.

        Returns:
            Per run, what :meth:`claim` answers, in order.

        Raises:
            LeaseLost: as :meth:`claim` (nothing of the failing call is stored).
            FireNotDue: a fire of a call is too far ahead; ``wait`` until the furthest is
                due (nothing of that call is stored).
        """
        answers: list[RunRecord | None] = []
        for chunk in chunks(runs, BATCH_SIZE):
            answers.extend(self._claim_chunk(lease, chunk, retention))
        return answers

    def _claim_chunk(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        lease_key, info_key, _ = lease_keys(lease.name)
        keys = _JobKeys(lease.name, [lease_key, info_key, epoch_key(lease.name)], 2)
        fires: list[Any] = []
        for run in runs:
            number = keys.number(run.job)
            fires += [number, str(run.key), run.to_json(), _cutoff(run, retention), run.attempt]
        args: list[str | int] = [
            lease.holder.id,
            str(lease.token),
            CLAIM_ALLOWANCE_MS,
            max(retention.limit, 0),
            TRIM_SCAN,
            _payload(fires),
        ]
        reply = self._acks.script(
            self._client, lease.name, self._scripts.claim_many, keys.keys, args
        )
        if reply[0] == "lost":
            raise lease_lost(lease.name, reply[1])
        if reply[0] == "early":
            raise FireNotDue(lease.name, max(int(reply[1]), 1) / 1000)
        self._floors.observe(lease.name, max(lease.token, *(run.token for run in runs)))
        return [_claimed(run, str(reply[2 * i]), reply[2 * i + 1]) for i, run in enumerate(runs)]

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        """Store ``run`` (``running``) over its attempt's ``claimed`` record, lease held.

        Raises:
            LeaseLost: as :meth:`claim` (checked first).
            ClaimLost: reason ``gone``, ``other-attempt`` or ``not-claimed``.
        """
        lease_key, info_key, _ = lease_keys(lease.name)
        runs_key, _ = run_keys(lease.name, run.job)
        when = run.scheduled_time.isoformat()
        if not run.attempt:
            raise ClaimLost(run.job, when, ClaimRefusal.OTHER_ATTEMPT)
        status, detail = self._acks.script(
            self._client,
            lease.name,
            self._scripts.start,
            [lease_key, info_key, runs_key],
            [lease.holder.id, str(lease.token), str(run.key), run.attempt, run.to_json()],
        )
        if status == "lost":
            raise lease_lost(lease.name, detail)
        if status != "started":
            raise ClaimLost(run.job, when, ClaimRefusal(str(status)))
        self._floors.observe(lease.name, max(lease.token, run.token))
        return run

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        """Start ``runs`` with one ``START_MANY_LUA`` call per :data:`BATCH_SIZE`, each
        checking the lease once, first.

        Returns:
            Per run, in order: ``run`` as stored, or the :class:`ClaimLost` :meth:`start`
            would raise (reason ``gone``, ``other-attempt`` or ``not-claimed``).

        Raises:
            LeaseLost: as :meth:`start` (nothing of the failing call is started).
        """
        answers: list[StartAnswer] = []
        for chunk in chunks(runs, BATCH_SIZE):
            answers.extend(self._start_chunk(lease, chunk))
        return answers

    def _start_chunk(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        lease_key, info_key, _ = lease_keys(lease.name)
        keys = _JobKeys(lease.name, [lease_key, info_key], 1)
        items: list[Any] = []
        for run in runs:
            # A run without an attempt is refused in Lua: no stored attempt matches ''.
            items += [keys.number(run.job), str(run.key), run.attempt, run.to_json()]
        args = [lease.holder.id, str(lease.token), _payload(items)]
        reply = self._acks.script(
            self._client, lease.name, self._scripts.start_many, keys.keys, args
        )
        if reply[0] == "lost":
            raise lease_lost(lease.name, reply[1])
        self._floors.observe(lease.name, max(lease.token, *(run.token for run in runs)))
        answers: list[StartAnswer] = []
        for i, run in enumerate(runs):
            status = str(reply[2 * i])
            if status == "started":
                answers.append(run)
            else:
                when = run.scheduled_time.isoformat()
                answers.append(ClaimLost(run.job, when, ClaimRefusal(status)))
        return answers

    def finish(self, name: str, run: RunRecord) -> None:
        """Overwrite the record of ``run`` if ``run.attempt`` wrote it."""
        runs_key, _ = run_keys(name, run.job)
        if not run.attempt:
            return  # a record from before attempts: no attempt matches it
        with translate_errors(self._url):
            self._scripts.finish(keys=[runs_key], args=[str(run.key), run.attempt, run.to_json()])
        self._floors.observe(name, run.token)

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """Store each outcome of ``runs`` over its own attempt's record, in order, with one
        ``FINISH_MANY_LUA`` call per :data:`BATCH_SIZE`."""
        # A record from before attempts: no attempt matches it.
        for chunk in chunks([run for run in runs if run.attempt], BATCH_SIZE):
            keys = _JobKeys(name, [], 1)
            items: list[Any] = []
            for run in chunk:
                items += [keys.number(run.job), str(run.key), run.attempt, run.to_json()]
            with translate_errors(self._url):
                self._scripts.finish_many(keys=keys.keys, args=[_payload(items)])
            self._floors.observe(name, max(run.token for run in chunk))

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The record of (``job``, ``scheduled_time``) from the runs hash, or ``None``."""
        runs_key, _ = run_keys(name, job)
        # Acknowledged: a settlement runs a claim it finds here (see .acks).
        raw = self._acks.command(
            self._client, name, "HGET", runs_key, str(fire_key(scheduled_time))
        )
        if raw is None:
            return None
        record = RunRecord.from_json(cast(str, raw))
        self._floors.observe(name, record.token)
        return record

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Delete the record of ``run``'s fire (hash and index) if ``run.attempt`` wrote it
        and it is still ``claimed``."""
        runs_key, index_key = run_keys(name, run.job)
        if not run.attempt:
            return False
        with translate_errors(self._url):
            deleted = self._scripts.unclaim(
                keys=[runs_key, index_key], args=[str(run.key), run.attempt]
            )
        return bool(deleted)

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` records of ``job``, newest fire first."""
        if limit <= 0:
            return []
        runs_key, index_key = run_keys(name, job)
        with translate_errors(self._url):
            reply = self._scripts.history(keys=[runs_key, index_key], args=[limit])
        records = [RunRecord.from_json(raw) for raw in reply]
        if records:
            self._floors.observe(name, max(record.token for record in records))
        return records

    def history_many(
        self, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]:
        """The newest ``limit`` records of each of ``jobs``: one ``HISTORY_LUA`` call per
        job, all in one pipeline (one round trip; two the first time after a server
        restart, which has forgotten the script)."""
        wanted = list(dict.fromkeys(jobs))
        if limit <= 0 or not wanted:
            return {job: [] for job in wanted}
        with translate_errors(self._url):
            replies = self._pipelined_history(name, wanted, limit)
        found = {
            job: [RunRecord.from_json(raw) for raw in reply]
            for job, reply in zip(wanted, replies, strict=True)
        }
        tokens = [record.token for records in found.values() for record in records]
        if tokens:
            self._floors.observe(name, max(tokens))
        return found

    def _pipelined_history(self, name: str, jobs: list[str], limit: int) -> list[Any]:
        """The replies of ``HISTORY_LUA`` for each of ``jobs``, sent in one pipeline.

        ``EVALSHA`` is sent directly (redis-py would first ask ``SCRIPT EXISTS``, a round
        trip of its own); a server that answers ``NOSCRIPT`` gets the script loaded and the
        pipeline sent once more.
        """
        node = self._acks.route(self._client, name)  # Redis Cluster: the slot's node
        replies = self._history_pipeline(node, name, jobs, limit)
        if any(isinstance(reply, MOVED) for reply in replies):
            self._acks.reroute(self._client)  # the slot moved: once, to its new owner
            node = self._acks.route(self._client, name)
            replies = self._history_pipeline(node, name, jobs, limit)
        if any(isinstance(reply, redis_lib.exceptions.NoScriptError) for reply in replies):
            node.script_load(HISTORY_LUA)
            replies = self._history_pipeline(node, name, jobs, limit)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _history_pipeline(
        self, node: redis_lib.Redis, name: str, jobs: list[str], limit: int
    ) -> list[Any]:
        pipe = node.pipeline(transaction=False)
        for job in jobs:
            pipe.evalsha(self._scripts.history.sha, 2, *run_keys(name, job), limit)
        return list(pipe.execute(raise_on_error=False))

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys of ``job`` claimed in ``[since, until]``, from the run index."""
        _, index_key = run_keys(name, job)
        with translate_errors(self._url):
            members = self._client.zrangebyscore(index_key, fire_key(since), fire_key(until))
        return {int(member) for member in cast(list[str], members)}


def _payload(items: list[Any]) -> str:
    """A batch script's runs as its one JSON argument (see :mod:`.scripts`, "Batches")."""
    return json.dumps(items, separators=(",", ":"))


def _claimed(run: RunRecord, status: str, detail: object) -> RunRecord | None:
    """What a claim of ``run`` answers for the script status ``status`` (not ``lost`` or
    ``early``): ``run`` when claimed, the stored record when resent, else ``None``."""
    if status == "resent":
        return RunRecord.from_json(str(detail))
    return run if status == "claimed" else None


__all__ = ["BATCH_SIZE", "RedisLedger"]
