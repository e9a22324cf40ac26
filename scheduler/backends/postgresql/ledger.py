"""The run ledger on PostgreSQL: one ``runs`` row per claimed fire.

Claims and starts are one call of a server-side function per :data:`BATCH_SIZE` runs
(:data:`~.schema.CLAIM_MANY_FUNCTION`, :data:`~.schema.START_MANY_FUNCTION`): the lease is
checked once, on the server's clock, with the row locked until the batch commits; then
each run goes through the same steps as a single claim (a single call is a batch of one).
Outcomes are one ``UPDATE ... FROM unnest(...)`` per batch, each row matched on its
attempt; unclaim one ``DELETE`` matched on attempt and state. History reads are one ranged
query for all jobs of a call (a window function over the primary key).

The arrays travel as parameters (psycopg adapts Python lists to PostgreSQL arrays), so a
batch of 1,000 claims is one statement and one round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from scheduler.backends.base import SingleDefaults, StartAnswer
from scheduler.backends.postgresql.database import Database
from scheduler.backends.postgresql.lease import TokenFloors
from scheduler.backends.postgresql.schema import CLAIM_ALLOWANCE_MS
from scheduler.backends.rules import TRIM_SCAN, chunks
from scheduler.backends.runs import Retention, RunRecord, fire_key
from scheduler.backends.states import ClaimRefusal, LossReason
from scheduler.errors import BackendUnavailable, ClaimLost, FireNotDue, LeaseLost
from scheduler.leadership.lease import Lease

#: The most runs one function call carries: ~10-20 ms of holding the lease row shared on a
#: 2-core test machine, which is all a renewal (on its own connection) waits for.
BATCH_SIZE = 1000
#: The most jobs one history query names.
HISTORY_JOBS = 1000


class PostgresLedger(SingleDefaults):
    """The :class:`~scheduler.backends.base.RunLedger` role, single calls and batches.

    Args:
        db: the database (its shared pool).
        floors: the token floors shared with the lease store.
    """

    def __init__(self, db: Database, floors: TokenFloors) -> None:
        self._db = db
        self._s = db.schema
        self._url = db.url
        self._floors = floors

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """Claim ``runs``, one function call per :data:`BATCH_SIZE` (the lease checked
        once in each, every fire's due time before anything is written).

        Returns:
            Per run, what :meth:`claim` answers, in order.
        """
        answers: list[RunRecord | None] = []
        protect = round(retention.protect * 1000)
        for chunk in chunks(runs, BATCH_SIZE):
            with self._db.work.call() as conn:
                rows = conn.execute(
                    f"SELECT status, detail FROM {self._s}.claim_many("
                    "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        lease.name,
                        lease.holder.id,
                        lease.token,
                        CLAIM_ALLOWANCE_MS,
                        max(retention.limit, 0),
                        TRIM_SCAN,
                        [run.job for run in chunk],
                        [run.key for run in chunk],
                        [run.outcome for run in chunk],
                        [run.attempt for run in chunk],
                        [run.to_json() for run in chunk],
                        [run.key - protect for run in chunk],
                    ),
                ).fetchall()
            if len(rows) == 1 and rows[0][0] in ("lost", "early"):
                status, detail = rows[0]
                if status == "lost":
                    raise LeaseLost(lease.name, LossReason(str(detail)))
                raise FireNotDue(lease.name, max(int(detail), 1) / 1000)
            if len(rows) != len(chunk):
                raise BackendUnavailable(
                    self._url, f"claim_many answered {len(rows)} rows for {len(chunk)} runs"
                )
            self._floors.observe(lease.name, lease.token)
            for run, (status, detail) in zip(chunk, rows, strict=True):
                if status == "claimed":
                    answers.append(run)
                elif status == "resent":
                    answers.append(self._parse(run.job, str(detail)))
                else:
                    answers.append(None)
        return answers

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        """Start ``runs``, one function call per :data:`BATCH_SIZE`, the lease checked
        once in each, first.

        Returns:
            Per run, in order: ``run`` as stored, or the :class:`ClaimLost` :meth:`start`
            would raise for it.
        """
        answers: list[StartAnswer] = []
        for chunk in chunks(runs, BATCH_SIZE):
            with self._db.work.call() as conn:
                rows = conn.execute(
                    f"SELECT * FROM {self._s}.start_many(%s, %s, %s, %s, %s, %s, %s)",
                    (
                        lease.name,
                        lease.holder.id,
                        lease.token,
                        [run.job for run in chunk],
                        [run.key for run in chunk],
                        [run.attempt for run in chunk],
                        [run.to_json() for run in chunk],
                    ),
                ).fetchall()
            if len(rows) == 1 and str(rows[0][0]).startswith("lost:"):
                raise LeaseLost(lease.name, LossReason(str(rows[0][0])[5:]))
            if len(rows) != len(chunk):
                raise BackendUnavailable(
                    self._url, f"start_many answered {len(rows)} rows for {len(chunk)} runs"
                )
            for run, (status,) in zip(chunk, rows, strict=True):
                if status == "started":
                    answers.append(run)
                else:
                    answers.append(
                        ClaimLost(run.job, run.scheduled_time.isoformat(), ClaimRefusal(status))
                    )
        return answers

    def finish(self, name: str, run: RunRecord) -> None:
        """Store the outcome of ``run`` over the record ``run.attempt`` wrote, if any."""
        self.finish_many(name, [run])

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """Store the outcomes of ``runs`` (of two outcomes of one attempt, the later), one
        ``UPDATE`` per :data:`BATCH_SIZE`, each row matched on its attempt."""
        # One UPDATE may match a row once only: keep each attempt's last outcome. A record
        # from before attempts has attempt '': no attempt matches it.
        latest = {(run.job, run.key, run.attempt): run for run in runs if run.attempt}
        for chunk in chunks(list(latest.values()), BATCH_SIZE):
            with self._db.work.call() as conn:
                conn.execute(
                    f"UPDATE {self._s}.runs AS r SET outcome = u.outcome, record = u.record "
                    "FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], %s::text[]) "
                    "AS u(job, fire_key, attempt, outcome, record) "
                    "WHERE r.name = %s AND r.job = u.job AND r.fire_key = u.fire_key "
                    "AND r.attempt = u.attempt",
                    (
                        [run.job for run in chunk],
                        [run.key for run in chunk],
                        [run.attempt for run in chunk],
                        [run.outcome for run in chunk],
                        [run.to_json() for run in chunk],
                        name,
                    ),
                )

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The run record of (``job``, ``scheduled_time``), or ``None``."""
        with self._db.work.call() as conn:
            row = conn.execute(
                f"SELECT record FROM {self._s}.runs WHERE name = %s AND job = %s AND fire_key = %s",
                (name, job, fire_key(scheduled_time)),
            ).fetchone()
        return None if row is None else self._parse(job, str(row[0]))

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Delete the record of ``run``'s fire if ``run.attempt`` wrote it and it is still
        ``claimed``."""
        if not run.attempt:
            return False
        with self._db.work.call() as conn:
            deleted = conn.execute(
                f"DELETE FROM {self._s}.runs WHERE name = %s AND job = %s AND fire_key = %s "
                "AND attempt = %s AND outcome = 'claimed'",
                (name, run.job, run.key, run.attempt),
            ).rowcount
        return deleted > 0

    def history_many(
        self, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]:
        """The newest ``limit`` run records of each of ``jobs``, newest fire first: one
        ranged query per :data:`HISTORY_JOBS` jobs."""
        wanted = list(dict.fromkeys(jobs))
        found: dict[str, list[RunRecord]] = {job: [] for job in wanted}
        if limit <= 0:
            return found
        for chunk in chunks(wanted, HISTORY_JOBS):
            with self._db.work.call() as conn:
                rows = conn.execute(
                    "SELECT job, record FROM (SELECT job, fire_key, record, row_number() OVER "
                    "(PARTITION BY job ORDER BY fire_key DESC) AS newest "
                    f"FROM {self._s}.runs WHERE name = %s AND job = ANY(%s)) AS ranked "
                    "WHERE newest <= %s ORDER BY job, fire_key DESC",
                    (name, list(chunk), limit),
                ).fetchall()
            for job, record in rows:
                found[str(job)].append(self._parse(str(job), str(record)))
        return found

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys of ``job`` claimed with fire instants in ``[since, until]``."""
        with self._db.work.call() as conn:
            rows = conn.execute(
                f"SELECT fire_key FROM {self._s}.runs WHERE name = %s AND job = %s "
                "AND fire_key BETWEEN %s AND %s",
                (name, job, fire_key(since), fire_key(until)),
            ).fetchall()
        return {int(key) for (key,) in rows}

    def _parse(self, job: str, record: str) -> RunRecord:
        try:
            parsed = RunRecord.from_json(record)
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                self._url, f"corrupt run record for job {job!r}: {exc}"
            ) from exc
        return parsed


__all__ = ["BATCH_SIZE", "HISTORY_JOBS", "PostgresLedger"]
