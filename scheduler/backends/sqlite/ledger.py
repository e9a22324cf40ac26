"""The run ledger on SQLite: one ``runs`` row per claimed fire.

Every write is one transaction (:meth:`~scheduler.backends.sqlite.database.Database.write`):
claim and start check the lease row (:meth:`.LeaseTable.require_held`) in the same
transaction that writes the run, and start, finish and unclaim compare the claim's attempt
and state in their ``WHERE`` clauses.

**Batches.** A batch of claims, starts or outcomes is one transaction per
:data:`BATCH_SIZE` runs, the lease checked once in each; every run goes through the same
code as a single call (:meth:`RunTable.claim` is a batch of one). Between two chunks the
lease's calls go first (:class:`~scheduler.backends.sqlite.database.Database`), so a
renewal waits for one chunk at most. :meth:`RunTable.history_many` is one ranged query
(a window function over the primary key) per :data:`HISTORY_JOBS` jobs.

Trimming follows :mod:`scheduler.backends.rules`: :func:`~scheduler.backends.rules.trim_window`
gives the window (without a scan bound: a local file), and one ``DELETE`` removes its
finished rows (:data:`~scheduler.backends.rules.FINISHED`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime

from scheduler.backends.base import SingleDefaults, StartAnswer
from scheduler.backends.rules import FINISHED, chunks, trim_window
from scheduler.backends.runs import Retention, RunRecord, fire_key
from scheduler.backends.sqlite.database import Database
from scheduler.backends.sqlite.lease import LeaseTable
from scheduler.backends.states import ClaimRefusal
from scheduler.clock import Clock
from scheduler.errors import BackendUnavailable, ClaimLost
from scheduler.leadership.lease import Lease

_FINISHED_SQL = ", ".join(f"'{outcome}'" for outcome in FINISHED)

#: The most runs one transaction of a batch carries: ~15 ms of holding the write lock for
#: 1,000 claims (measured on a 2-core test machine), which is all a lease renewal can
#: wait for.
BATCH_SIZE = 1000
#: The most jobs one history query names: within SQLite's oldest limit on parameters
#: (999), and a read short enough for the lease to go between two.
HISTORY_JOBS = 500


class RunTable(SingleDefaults):
    """The :class:`~scheduler.backends.base.RunLedger` role on one database.

    Args:
        db: the database.
        leases: the lease table claims and starts are fenced by.
        clock: the clock lease expiries are read from.
    """

    def __init__(self, db: Database, leases: LeaseTable, clock: Clock) -> None:
        self._db = db
        self._leases = leases
        self._clock = clock

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """Claim ``runs`` in one transaction per :data:`BATCH_SIZE`, the lease checked once
        in each, before anything of it is stored.

        Returns:
            Per run, what :meth:`claim` answers, in order.

        Raises:
            LeaseLost: ``lease`` is not held (nothing of that transaction is stored).
        """
        answers: list[RunRecord | None] = []
        for chunk in chunks(runs, BATCH_SIZE):
            with self._db.write() as conn:
                self._leases.require_held(conn, lease, self._clock.monotonic())
                answers += [self._claim_in(conn, lease.name, run, retention) for run in chunk]
        return answers

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        """Start ``runs`` in one transaction per :data:`BATCH_SIZE`, the lease checked once
        in each, first.

        Returns:
            Per run, in order: ``run`` as stored, or the :class:`ClaimLost` :meth:`start`
            would raise for it.

        Raises:
            LeaseLost: ``lease`` is not held (nothing of that transaction is started).
        """
        answers: list[StartAnswer] = []
        for chunk in chunks(runs, BATCH_SIZE):
            with self._db.write() as conn:
                self._leases.require_held(conn, lease, self._clock.monotonic())
                answers += [self._start_in(conn, lease.name, run) for run in chunk]
        return answers

    def finish(self, name: str, run: RunRecord) -> None:
        """Store the outcome of ``run`` over the record ``run.attempt`` wrote, if any."""
        self.finish_many(name, [run])

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """Store the outcomes of ``runs``, each over its own attempt's record, in order, in
        one transaction per :data:`BATCH_SIZE`."""
        # A record from before attempts has attempt '': no attempt matches it.
        rows = [
            (run.outcome, run.to_json(), name, run.job, run.key, run.attempt)
            for run in runs
            if run.attempt
        ]
        for chunk in chunks(rows, BATCH_SIZE):
            with self._db.write() as conn:
                conn.executemany(
                    "UPDATE runs SET outcome = ?, record = ? "
                    "WHERE name = ? AND job = ? AND fire_key = ? AND attempt = ?",
                    chunk,
                )

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The run record of (``job``, ``scheduled_time``), or ``None``."""
        with self._db.session() as conn:
            row = conn.execute(
                "SELECT record FROM runs WHERE name = ? AND job = ? AND fire_key = ?",
                (name, job, fire_key(scheduled_time)),
            ).fetchone()
        return None if row is None else self._parse(job, [row])[0]

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Delete the record of ``run``'s fire if ``run.attempt`` wrote it and it is still
        ``claimed``."""
        if not run.attempt:
            return False
        with self._db.write() as conn:
            deleted = conn.execute(
                "DELETE FROM runs WHERE name = ? AND job = ? AND fire_key = ? AND attempt = ? "
                "AND outcome = 'claimed'",
                (name, run.job, run.key, run.attempt),
            ).rowcount
        return deleted > 0

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` run records of ``job``, newest fire first."""
        if limit <= 0:
            return []
        with self._db.session() as conn:
            rows = conn.execute(
                "SELECT record FROM runs WHERE name = ? AND job = ? ORDER BY fire_key DESC LIMIT ?",
                (name, job, limit),
            ).fetchall()
        return self._parse(job, rows)

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
            marks = ", ".join("?" * len(chunk))
            with self._db.session() as conn:
                rows = conn.execute(
                    "SELECT job, record FROM (SELECT job, fire_key, record, row_number() OVER "
                    "(PARTITION BY job ORDER BY fire_key DESC) AS newest FROM runs "
                    f"WHERE name = ? AND job IN ({marks})) "
                    "WHERE newest <= ? ORDER BY job, fire_key DESC",
                    (name, *chunk, limit),
                ).fetchall()
            for job, record in rows:
                found[job] += self._parse(job, [(record,)])
        return found

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys of ``job`` claimed with fire instants in ``[since, until]``."""
        with self._db.session() as conn:
            rows = conn.execute(
                "SELECT fire_key FROM runs WHERE name = ? AND job = ? AND fire_key BETWEEN ? AND ?",
                (name, job, fire_key(since), fire_key(until)),
            ).fetchall()
        return {int(key) for (key,) in rows}

    def _claim_in(
        self, conn: sqlite3.Connection, name: str, run: RunRecord, retention: Retention
    ) -> RunRecord | None:
        """Claim ``run`` inside the caller's transaction, whose lease check has passed."""
        key = run.key
        existing = conn.execute(
            "SELECT attempt, record FROM runs WHERE name = ? AND job = ? AND fire_key = ?",
            (name, run.job, key),
        ).fetchone()
        if existing is not None:
            attempt, record = existing
            if run.attempt and attempt == run.attempt:
                return self._parse(run.job, [(record,)])[0]
            return None
        conn.execute(
            "INSERT INTO runs (name, job, fire_key, token, outcome, record, attempt) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, run.job, key, run.token, run.outcome, run.to_json(), run.attempt),
        )
        (count,) = conn.execute(
            "SELECT count(*) FROM runs WHERE name = ? AND job = ?", (name, run.job)
        ).fetchone()
        window = trim_window(int(count), key, retention, scan=None)
        if window.count > 0:
            # The window's finished rows go; an unfinished one keeps its place in it.
            conn.execute(
                f"DELETE FROM runs WHERE name = ? AND job = ? AND outcome IN ({_FINISHED_SQL})"
                " AND fire_key IN (SELECT fire_key FROM runs WHERE name = ? AND job = ?"
                " AND fire_key < ? ORDER BY fire_key LIMIT ?)",
                (name, run.job, name, run.job, window.cutoff, window.count),
            )
        return run

    def _start_in(self, conn: sqlite3.Connection, name: str, run: RunRecord) -> StartAnswer:
        """Start ``run`` inside the caller's transaction, whose lease check has passed; the
        refusal it meets, returned."""
        row = conn.execute(
            "SELECT attempt, outcome FROM runs WHERE name = ? AND job = ? AND fire_key = ?",
            (name, run.job, run.key),
        ).fetchone()
        when = run.scheduled_time.isoformat()
        if row is None:
            return ClaimLost(run.job, when, ClaimRefusal.GONE)
        if not run.attempt or row[0] != run.attempt:
            return ClaimLost(run.job, when, ClaimRefusal.OTHER_ATTEMPT)
        if row[1] != "claimed":
            return ClaimLost(run.job, when, ClaimRefusal.NOT_CLAIMED)
        conn.execute(
            "UPDATE runs SET outcome = ?, record = ? WHERE name = ? AND job = ? AND fire_key = ?",
            (run.outcome, run.to_json(), name, run.job, run.key),
        )
        return run

    def _parse(self, job: str, rows: list[tuple[str]]) -> list[RunRecord]:
        try:
            return [RunRecord.from_json(record) for (record,) in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                self._db.url, f"corrupt run record for job {job!r}: {exc}"
            ) from exc


__all__ = ["BATCH_SIZE", "HISTORY_JOBS", "RunTable"]
