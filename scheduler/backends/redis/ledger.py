"""The run ledger on Redis: per job, a hash of run records and a sorted index of fire keys.

Claim, start, finish and unclaim are each one script (:mod:`.scripts`) that checks the
lease (claim, start) and the stored record's attempt and state, then writes. Claims trim by
the rule of :mod:`scheduler.backends.rules`, in Lua, at most
:data:`~scheduler.backends.rules.TRIM_SCAN` candidates per claim. The batch methods loop
(:class:`~scheduler.backends.base.BatchDefaults`, on the façade).
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

import redis as redis_lib

from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.keys import epoch_key, lease_keys, run_keys
from scheduler.backends.redis.lease import TokenFloors, lease_lost
from scheduler.backends.redis.scripts import CLAIM_ALLOWANCE_MS, Scripts
from scheduler.backends.rules import TRIM_SCAN
from scheduler.backends.states import ClaimRefusal
from scheduler.errors import ClaimLost, FireNotDue
from scheduler.firing.runs import Retention, RunRecord, fire_key
from scheduler.leadership.lease import Lease


class RedisLedger:
    """The single-item :class:`~scheduler.backends.base.RunLedger` methods on one client.

    Args:
        client: a client whose calls are bounded and never retried.
        scripts: the scripts registered with ``client``.
        url: the redacted backend URL, used in every error message.
        floors: the token floors shared with the lease store: every token read is observed.
    """

    def __init__(
        self, client: redis_lib.Redis, scripts: Scripts, url: str, floors: TokenFloors
    ) -> None:
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
        cutoff = run.key - round(retention.protect * 1000)
        with translate_errors(self._url):
            status, detail = self._scripts.claim(
                keys=[lease_key, info_key, runs_key, index_key, epoch_key(lease.name)],
                args=[
                    lease.holder.id,
                    str(lease.token),
                    str(run.key),
                    run.to_json(),
                    max(retention.limit, 0),
                    str(cutoff),
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
        if status == "resent":
            return RunRecord.from_json(str(detail))
        return run if status == "claimed" else None

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
        with translate_errors(self._url):
            status, detail = self._scripts.start(
                keys=[lease_key, info_key, runs_key],
                args=[lease.holder.id, str(lease.token), str(run.key), run.attempt, run.to_json()],
            )
        if status == "lost":
            raise lease_lost(lease.name, detail)
        if status != "started":
            raise ClaimLost(run.job, when, ClaimRefusal(str(status)))
        self._floors.observe(lease.name, max(lease.token, run.token))
        return run

    def finish(self, name: str, run: RunRecord) -> None:
        """Overwrite the record of ``run`` if ``run.attempt`` wrote it."""
        runs_key, _ = run_keys(name, run.job)
        if not run.attempt:
            return  # a record from before attempts: no attempt matches it
        with translate_errors(self._url):
            self._scripts.finish(keys=[runs_key], args=[str(run.key), run.attempt, run.to_json()])
        self._floors.observe(name, run.token)

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The record of (``job``, ``scheduled_time``) from the runs hash, or ``None``."""
        runs_key, _ = run_keys(name, job)
        with translate_errors(self._url):
            raw = self._client.hget(runs_key, str(fire_key(scheduled_time)))
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

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys of ``job`` claimed in ``[since, until]``, from the run index."""
        _, index_key = run_keys(name, job)
        with translate_errors(self._url):
            members = self._client.zrangebyscore(index_key, fire_key(since), fire_key(until))
        return {int(member) for member in cast(list[str], members)}


__all__ = ["RedisLedger"]
