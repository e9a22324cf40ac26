"""A fenced sink for tests: a SQLite ledger, separate from the backend under test.

Every write carries a fencing token; a write is accepted only if its token is at least the
highest token accepted so far for that resource (the pattern users apply to their own
sinks). Rejected attempts are recorded too, so a test can see a deposed leader try.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fence (resource TEXT PRIMARY KEY, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS writes (
    resource TEXT, job TEXT, tick TEXT, replica TEXT, token INTEGER, pid INTEGER,
    phase TEXT, accepted INTEGER, at REAL, note TEXT
);
"""


@dataclass(frozen=True)
class Write:
    resource: str
    job: str
    tick: str
    replica: str
    token: int
    pid: int
    phase: str
    accepted: bool
    at: float
    note: str


class FencedSink:
    """Opens (and creates) the sink file; safe to use from several processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        # Jobs call the sink from the runner's worker threads: one connection, one lock.
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.path, timeout=10, isolation_level=None, check_same_thread=False
        )
        self._wal()
        self._db.executescript(_SCHEMA)

    def _wal(self) -> None:
        """Switch the file to WAL once. Changing the journal mode does not wait on SQLite's
        busy handler: a replica's hook opening the sink while the test polls it got
        "database is locked" (a CI failure). Already WAL: nothing to do; else retry."""
        deadline = time.monotonic() + 10
        while True:
            try:
                mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
                if mode != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def write(
        self,
        resource: str,
        token: int,
        *,
        job: str = "",
        tick: str = "",
        replica: str = "",
        pid: int = 0,
        phase: str = "",
        note: str = "",
    ) -> bool:
        """Record a write; True if accepted (token >= every token accepted before)."""
        with self._lock:
            return self._write(resource, token, job, tick, replica, pid, phase, note)

    def _write(
        self,
        resource: str,
        token: int,
        job: str,
        tick: str,
        replica: str,
        pid: int,
        phase: str,
        note: str,
    ) -> bool:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT token FROM fence WHERE resource = ?", (resource,)).fetchone()
            accepted = row is None or token >= row[0]
            if accepted:
                db.execute(
                    "INSERT INTO fence(resource, token) VALUES (?, ?) "
                    "ON CONFLICT(resource) DO UPDATE SET token = excluded.token",
                    (resource, token),
                )
            db.execute(
                "INSERT INTO writes VALUES (?,?,?,?,?,?,?,?,?,?)",
                (resource, job, tick, replica, token, pid, phase, int(accepted), time.time(), note),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return accepted

    def writes(self) -> list[Write]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM writes ORDER BY at").fetchall()
        return [
            Write(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7]), r[8], r[9] or "")
            for r in rows
        ]

    def close(self) -> None:
        self._db.close()


def read_writes(path: str | Path) -> list[Write]:
    """Every write in the sink at ``path`` so far, read on a connection of its own."""
    sink = FencedSink(path)
    try:
        return sink.writes()
    finally:
        sink.close()


_shared: FencedSink | None = None


def env_sink() -> FencedSink:
    """The sink named by ``BATON_TEST_SINK``, opened once per process (for test jobs)."""
    global _shared
    if _shared is None:
        _shared = FencedSink(os.environ["BATON_TEST_SINK"])
    return _shared
