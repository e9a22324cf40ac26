"""The chaos suite's fenced ledger: one server process, a SQLite file, clients in the jobs.

The ledger is where the workload jobs record what they do, and it is *not* the backend under
test. It extends the harness's :class:`~tests.harness.sink.FencedSink` rule (a write is
accepted only if its token is >= the highest token accepted for that resource; rejected
attempts are recorded too) with two things the chaos suite needs:

* **One clock.** Replicas run under libfaketime, so their own clocks lie on purpose. Every
  row is stamped by the ledger server, which runs without libfaketime: ``at`` (wall) and
  ``mono`` are real time, and ``seq`` (the row id) is the order in which the server applied
  the requests, a total order no replica clock can disturb.
* **A fenced counter.** ``read`` returns the counter *and* raises the resource's mark like a
  write (so a deposed leader's later read or write is refused); ``store`` sets it. A job that
  reads, sleeps and stores through these can only lose an update if two runs with the same
  token, or out-of-order tokens, were active at once: broken mutual exclusion.

Protocol: one JSON object per line over a Unix socket, one JSON answer per line. Requests
are served one at a time, in arrival order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import socketserver
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS fence (resource TEXT PRIMARY KEY, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counter (resource TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS writes (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    resource TEXT NOT NULL,
    op       TEXT NOT NULL,       -- write | read | store | event
    job      TEXT NOT NULL,
    tick     TEXT NOT NULL,       -- the fire instant (ISO, UTC); '' for events
    run      TEXT NOT NULL,       -- one id per job invocation
    replica  TEXT NOT NULL,
    token    INTEGER NOT NULL,
    pid      INTEGER NOT NULL,
    phase    TEXT NOT NULL,       -- start | progress | read | store | end | acquired | lost
    accepted INTEGER NOT NULL,
    value    INTEGER,             -- counter value read or stored
    at       REAL NOT NULL,       -- server wall clock (real, not faked)
    mono     REAL NOT NULL,       -- server monotonic clock
    local    REAL,                -- the writer's own (possibly faked) wall clock
    note     TEXT NOT NULL DEFAULT ''
);
"""

#: Seconds a client waits for the server before giving up on one request.
CLIENT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Row:
    """One ledger row, as the checker reads it."""

    seq: int
    resource: str
    op: str
    job: str
    tick: str
    run: str
    replica: str
    token: int
    pid: int
    phase: str
    accepted: bool
    value: int | None
    at: float
    mono: float
    local: float | None
    note: str


class LedgerStore:
    """The SQLite file behind the server; also opened read-only by the checker."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def apply(self, request: dict[str, Any]) -> dict[str, Any]:
        """Apply one request (fence check, counter, record) in one transaction."""
        op = str(request.get("op", ""))
        if op not in ("write", "read", "store", "event"):
            return {"error": f"unknown op {op!r}"}
        resource = str(request.get("resource", "events" if op == "event" else ""))
        token = int(request.get("token", 0))
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            accepted = True
            if op != "event":
                row = db.execute(
                    "SELECT token FROM fence WHERE resource = ?", (resource,)
                ).fetchone()
                accepted = row is None or token >= int(row[0])
                if accepted:
                    db.execute(
                        "INSERT INTO fence(resource, token) VALUES (?, ?) "
                        "ON CONFLICT(resource) DO UPDATE SET token = excluded.token",
                        (resource, token),
                    )
            value: int | None = None
            if op == "read":
                found = db.execute(
                    "SELECT value FROM counter WHERE resource = ?", (resource,)
                ).fetchone()
                value = int(found[0]) if found else 0
            elif op == "store":
                value = int(request["value"])
                if accepted:
                    db.execute(
                        "INSERT INTO counter(resource, value) VALUES (?, ?) "
                        "ON CONFLICT(resource) DO UPDATE SET value = excluded.value",
                        (resource, value),
                    )
            db.execute(
                "INSERT INTO writes (resource, op, job, tick, run, replica, token, pid, phase, "
                "accepted, value, at, mono, local, note) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    resource,
                    op,
                    str(request.get("job", "")),
                    str(request.get("tick", "")),
                    str(request.get("run", "")),
                    str(request.get("replica", "")),
                    token,
                    int(request.get("pid", 0)),
                    str(request.get("phase", op)),
                    int(accepted),
                    value,
                    time.time(),
                    time.monotonic(),
                    request.get("local"),
                    str(request.get("note", "")),
                ),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        answer: dict[str, Any] = {"accepted": accepted}
        if op == "read" and accepted:
            answer["value"] = value
        return answer

    def rows(self) -> list[Row]:
        """Every row in server order."""
        cursor = self._db.execute(
            "SELECT seq, resource, op, job, tick, run, replica, token, pid, phase, accepted, "
            "value, at, mono, local, note FROM writes ORDER BY seq"
        )
        return [
            Row(
                seq=r[0],
                resource=r[1],
                op=r[2],
                job=r[3],
                tick=r[4],
                run=r[5],
                replica=r[6],
                token=int(r[7]),
                pid=int(r[8]),
                phase=r[9],
                accepted=bool(r[10]),
                value=r[11],
                at=float(r[12]),
                mono=float(r[13]),
                local=r[14],
                note=r[15] or "",
            )
            for r in cursor.fetchall()
        ]

    def counters(self) -> dict[str, int]:
        """Final counter values by resource."""
        return {r: int(v) for r, v in self._db.execute("SELECT resource, value FROM counter")}

    def close(self) -> None:
        self._db.close()


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        for line in self.rfile:
            try:
                request = json.loads(line)
                with self.server.lock:
                    answer = self.server.store.apply(request)
            except Exception as exc:  # a bad request must not take the ledger down
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            try:
                self.wfile.write(json.dumps(answer).encode() + b"\n")
                self.wfile.flush()
            except OSError:
                return


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, store: LedgerStore) -> None:
        self.store = store
        self.lock = threading.Lock()  # one request at a time: the row order is the truth
        super().__init__(path, _Handler)


def serve(db: str, sock: str) -> None:
    """Serve the ledger ``db`` on the Unix socket ``sock`` until SIGTERM."""
    if os.path.exists(sock):
        os.unlink(sock)
    store = LedgerStore(db)
    server = _Server(sock, store)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        store.close()


class LedgerClient:
    """A connection to the ledger server; thread-safe, reconnects after an error.

    Args:
        sock: path of the server's Unix socket.
    """

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        self._conn: socket.socket | None = None
        self._file: Any = None

    def call(self, **request: Any) -> dict[str, Any]:
        """Send one request and return the server's answer.

        Raises:
            OSError: the server could not be reached or did not answer in time.
            RuntimeError: the server refused the request as malformed.
        """
        payload = json.dumps(request).encode() + b"\n"
        with self._lock:
            try:
                if self._conn is None:
                    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    conn.settimeout(CLIENT_TIMEOUT)
                    conn.connect(self.sock)
                    self._conn, self._file = conn, conn.makefile("rb")
                self._conn.sendall(payload)
                line = self._file.readline()
                if not line:
                    raise OSError("ledger closed the connection")
            except OSError:
                self._close()
                raise
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"ledger refused {request.get('op')!r}: {answer['error']}")
        return answer

    def _close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(OSError):
                self._conn.close()
        self._conn, self._file = None, None

    def close(self) -> None:
        with self._lock:
            self._close()


def main() -> None:
    """``python -m tests.chaos.ledger --db ledger.db --socket ledger.sock``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--socket", required=True)
    args = parser.parse_args()
    serve(args.db, args.socket)


if __name__ == "__main__":
    main()
