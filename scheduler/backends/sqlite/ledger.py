"""The run ledger on SQLite: one ``runs`` row per claimed fire.

Every write is one transaction (:meth:`~scheduler.backends.sqlite.database.Database.write`):
claim and start check the lease row (:meth:`.LeaseTable.require_held`) in the same
transaction that writes the run, and start, finish and unclaim compare the claim's attempt
and state in their ``WHERE`` clauses. A batch of claims or outcomes is one transaction too.

Trimming follows :mod:`scheduler.backends.rules`: :func:`~scheduler.backends.rules.trim_window`
gives the window (without a scan bound: a local file), and one ``DELETE`` removes its
finished rows (:data:`~scheduler.backends.rules.FINISHED`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime

from scheduler.backends.rules import FINISHED, trim_window
from scheduler.backends.sqlite.database import Database
from scheduler.backends.sqlite.lease import LeaseTable
from scheduler.backends.states import ClaimRefusal
from scheduler.clock import Clock
from scheduler.errors import BackendUnavailable, ClaimLost
from scheduler.firing.runs import Retention, RunRecord, fire_key
from scheduler.leadership.lease import Lease

_FINISHED_SQL = ", ".join(f"'{outcome}'" for outcome in FINISHED)


class RunTable:
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

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """Store ``run`` if ``lease`` is held and the fire is unclaimed; trim old history.

        Returns:
            ``run``; the stored record when ``run.attempt`` wrote it (a resend); ``None`` if
            another attempt claimed (``run.job``, ``run.scheduled_time``).

        Raises:
            LeaseLost: ``lease`` is not held (checked before the duplicate check).
        """
        return self.claim_many(lease, [run], retention)[0]

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        """Claim every one of ``runs`` in one transaction, the lease checked once.

        All or nothing: a lost lease raises before anything is stored.

        Raises:
            LeaseLost: ``lease`` is not held.
        """
        if not runs:
            return []
        with self._db.write() as conn:
            self._leases.require_held(conn, lease, self._clock.monotonic())
            return [self._claim_in(conn, lease.name, run, retention) for run in runs]

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        """Store ``run`` (``running``) over the ``claimed`` record of ``run.attempt``.

        The lease check and the update are one write transaction.

        Returns:
            ``run``.

        Raises:
            LeaseLost: ``lease`` is not held (checked first), as for :meth:`claim`.
            ClaimLost: reason ``gone`` (no record), ``other-attempt`` or ``not-claimed``
                (already started or finished).
        """
        with self._db.write() as conn:
            self._leases.require_held(conn, lease, self._clock.monotonic())
            row = conn.execute(
                "SELECT attempt, outcome FROM runs WHERE name = ? AND job = ? AND fire_key = ?",
                (lease.name, run.job, run.key),
            ).fetchone()
            when = run.scheduled_time.isoformat()
            if row is None:
                raise ClaimLost(run.job, when, ClaimRefusal.GONE)
            if not run.attempt or row[0] != run.attempt:
                raise ClaimLost(run.job, when, ClaimRefusal.OTHER_ATTEMPT)
            if row[1] != "claimed":
                raise ClaimLost(run.job, when, ClaimRefusal.NOT_CLAIMED)
            conn.execute(
                "UPDATE runs SET outcome = ?, record = ? "
                "WHERE name = ? AND job = ? AND fire_key = ?",
                (run.outcome, run.to_json(), lease.name, run.job, run.key),
            )
        return run

    def finish(self, name: str, run: RunRecord) -> None:
        """Store the outcome of ``run`` over the record ``run.attempt`` wrote, if any."""
        self.finish_many(name, [run])

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        """Store the outcomes of ``runs``, each over its own attempt's record, in one
        transaction."""
        # A record from before attempts has attempt '': no attempt matches it.
        rows = [
            (run.outcome, run.to_json(), name, run.job, run.key, run.attempt)
            for run in runs
            if run.attempt
        ]
        if not rows:
            return
        with self._db.write() as conn:
            conn.executemany(
                "UPDATE runs SET outcome = ?, record = ? "
                "WHERE name = ? AND job = ? AND fire_key = ? AND attempt = ?",
                rows,
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

    def _parse(self, job: str, rows: list[tuple[str]]) -> list[RunRecord]:
        try:
            return [RunRecord.from_json(record) for (record,) in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(
                self._db.url, f"corrupt run record for job {job!r}: {exc}"
            ) from exc


__all__ = ["RunTable"]
