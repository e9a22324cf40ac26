"""Behaviour only the SQLite backend has: boot ids, real processes on one file, URLs, paths.

The generic lease and claim contract is pinned by ``tests/contract``; these tests cover what
follows from SQLite being a file shared by processes on one host.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.backends import from_url, redact
from scheduler.backends.base import LeaseNotifier, watch_lease
from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.sqlite import SCHEMA_VERSION, SqliteBackend, path_from_url
from scheduler.backends.sqlite.database import Database
from scheduler.backends.states import LossReason
from scheduler.clock import FakeClock
from scheduler.errors import (
    BackendPermanentError,
    BackendReadOnlyError,
    BackendSchemaError,
    BackendUnavailable,
    ClaimLost,
    ConfigError,
    LeaseLost,
)
from scheduler.leadership.lease import Holder, Lease

WAIT = 15.0  # seconds any cross-process condition may take before the test fails

# A replica process driven line by line over stdin; it answers each command with one JSON
# line on stdout. It uses the real system clock, as production replicas do.
CHILD = r"""
import json, os, signal, sys
from datetime import UTC, datetime, timedelta
from scheduler.backends.sqlite import SqliteBackend
from scheduler.clock import SYSTEM_CLOCK
from scheduler.leadership.lease import Holder, Lease
from scheduler.backends.runs import Retention, RunRecord

def say(**fields):
    print(json.dumps(fields), flush=True)

backend = SqliteBackend.from_url(sys.argv[1], op_timeout=5.0, clock=SYSTEM_CLOCK)
holder = Holder.new(sys.argv[2])
lease = None
say(event="ready", pid=os.getpid())
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "open":
        backend.check()
        say(event="opened")
    elif cmd == "acquire":
        lease = backend.try_acquire(args[0], holder, float(args[1]))
        if lease is None:
            say(event="busy")
        else:
            say(event="acquired", token=lease.token, sent_at=lease.sent_at)
    elif cmd == "release":
        backend.release(lease)
        say(event="released")
    elif cmd == "claim-then-die":
        base = datetime(2026, 1, 1, tzinfo=UTC)
        for i in range(int(args[0])):
            run = RunRecord(job="job", scheduled_time=base + timedelta(minutes=i),
                            replica_id=holder.replica_id, token=lease.token,
                            started=datetime.now(UTC))
            stored = backend.claim(lease, run, Retention(limit=1000))
            say(event="claimed", key=stored.key)
        os.kill(os.getpid(), signal.SIGKILL)
"""


class Replica:
    """A child replica process and the JSON lines it answers with."""

    def __init__(self, url: str, replica_id: str, *, user: int | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, url, replica_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            user=user,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")  # EOF

    def expect(self, event: str) -> dict[str, Any]:
        """The next message, which must be ``event``; fails after WAIT seconds."""
        message = self.next()
        assert message["event"] == event, message
        return message

    def next(self) -> dict[str, Any]:
        """The next message; fails after WAIT seconds or if the process exits first."""
        try:
            line = self._lines.get(timeout=WAIT)
        except queue.Empty:
            pytest.fail(f"replica {self.proc.pid} said nothing within {WAIT}s")
        if not line:
            self.proc.wait(timeout=WAIT)
            assert self.proc.stderr is not None
            pytest.fail(f"replica exited ({self.proc.returncode}): {self.proc.stderr.read()}")
        message: dict[str, Any] = json.loads(line)
        return message

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def ask(self, command: str) -> dict[str, Any]:
        self.send(command)
        return self.next()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=WAIT)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=WAIT)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/baton.db"


@pytest.fixture
def replicas(url: str) -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for replica in started:
        replica.stop()


def spawn(replicas: list[Replica], url: str, count: int) -> list[Replica]:
    new = [Replica(url, f"r{len(replicas) + i}") for i in range(count)]
    replicas.extend(new)
    for replica in new:
        replica.expect("ready")
    return new


def backend(url: str, **kwargs: Any) -> SqliteBackend:
    kwargs.setdefault("op_timeout", 5.0)
    return SqliteBackend(path_from_url(url), url=url, **kwargs)


def acquire_within(
    b: SqliteBackend, name: str, holder: Holder, ttl: float, timeout: float
) -> Lease:
    """Try to acquire until it succeeds, pacing attempts with wait_for_change, as a follower."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lease = b.try_acquire(name, holder, ttl)
        if lease is not None:
            return lease
        b.wait_for_change(name, min(0.2, max(0.0, deadline - time.monotonic())))
    pytest.fail(f"lease {name!r} not acquired within {timeout}s")


def start_waiter(
    b: SqliteBackend, name: str, timeout: float
) -> tuple[threading.Thread, threading.Event]:
    """A thread blocked in ``b.wait_for_change``, and an event set when it returns."""
    returned = threading.Event()

    def wait() -> None:
        b.wait_for_change(name, timeout)
        returned.set()

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread, returned


# -- expiry by boot id and monotonic clock ------------------------------------------------------


def test_lease_from_another_boot_is_expired(url: str) -> None:
    """A lease row stamped with another boot id is free to take, unreadable and unrenewable."""
    before_reboot = backend(url, boot_id="boot-before-reboot")
    after_reboot = backend(url, boot_id="boot-after-reboot")
    old = before_reboot.try_acquire("cluster", Holder.new("old"), ttl=3600)
    assert old is not None
    assert before_reboot.read("cluster") is not None  # live within its own boot

    assert after_reboot.read("cluster") is None
    with pytest.raises(LeaseLost) as lost:
        after_reboot.renew(old)
    assert lost.value.reason == "expired"
    new = after_reboot.try_acquire("cluster", Holder.new("new"), ttl=3600)
    assert new is not None
    assert new.token > old.token


def test_same_boot_lease_is_held(url: str) -> None:
    """The boot-id check does not free a live lease written during this boot."""
    first = backend(url, boot_id="this-boot")
    second = backend(url, boot_id="this-boot")
    assert first.try_acquire("cluster", Holder.new("a"), ttl=3600) is not None
    assert second.try_acquire("cluster", Holder.new("b"), ttl=3600) is None
    record = second.read("cluster")
    assert record is not None and record.replica_id == "a"


def test_expiry_further_ahead_than_ttl_means_clock_restarted(url: str) -> None:
    """A row expiring later than now + its TTL cannot come from this clock: it is expired."""
    earlier_clock = FakeClock(start=50_000.0)  # before a restart the clock read higher
    restarted_clock = FakeClock(start=100.0)
    before = backend(url, boot_id="", clock=earlier_clock)
    after = backend(url, boot_id="", clock=restarted_clock)
    assert before.try_acquire("cluster", Holder.new("a"), ttl=10) is not None
    assert after.read("cluster") is None
    assert after.try_acquire("cluster", Holder.new("b"), ttl=10) is not None


def test_expiry_follows_injected_monotonic_clock_not_wall_clock(url: str) -> None:
    """The lease lasts exactly its TTL on the monotonic clock it was given."""
    clock = FakeClock()
    b = backend(url, clock=clock)
    lease = b.try_acquire("cluster", Holder.new("a"), ttl=10)
    assert lease is not None
    clock.advance(9.9)
    record = b.read("cluster")
    assert record is not None and record.ttl_left == pytest.approx(0.1)
    assert b.try_acquire("cluster", Holder.new("b"), ttl=10) is None
    clock.advance(0.1)
    assert b.read("cluster") is None
    taken = b.try_acquire("cluster", Holder.new("b"), ttl=10)
    assert taken is not None and taken.token == lease.token + 1


# -- several processes on one file --------------------------------------------------------------


def test_processes_starting_together_then_contending_exactly_one_acquires(
    url: str, replicas: list[Replica]
) -> None:
    """Replicas opening a fresh file at once all succeed, and exactly one of them acquires."""
    group = spawn(replicas, url, 8)
    for replica in group:  # all open the new file (and race to set it up) at once
        replica.send("open")
    for replica in group:
        replica.expect("opened")
    for replica in group:
        replica.send("acquire cluster 30")
    answers = [replica.next() for replica in group]
    acquired = [a for a in answers if a["event"] == "acquired"]
    assert len(acquired) == 1, answers
    assert [a["event"] for a in answers].count("busy") == len(group) - 1
    record = backend(url).read("cluster")
    assert record is not None and record.token == acquired[0]["token"]


def _open_together(url: str, count: int) -> list[BaseException]:
    """Open ``count`` backends on ``url`` at the same moment; what their first use raised."""
    failures: list[BaseException] = []
    crowd = [backend(url, op_timeout=2.0) for _ in range(count)]
    barrier = threading.Barrier(count)

    def open_one(b: SqliteBackend) -> None:
        barrier.wait()
        try:
            b.check()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=open_one, args=(b,)) for b in crowd]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    for b in crowd:
        b.close()
    return failures


def test_connections_opening_a_new_file_together_all_succeed(tmp_path: Path) -> None:
    """The WAL switch and schema creation on a new file tolerate a crowd of openers."""
    failures: list[BaseException] = []
    for attempt in range(60):  # the race is narrow; many fresh files make losing it likely
        url = f"sqlite:///{tmp_path}/{attempt}.db"
        failures.extend(_open_together(url, 4))
    assert not failures, failures[:3]


def test_killed_holder_lease_expires_after_ttl_then_another_process_takes_over(
    url: str, replicas: list[Replica]
) -> None:
    """A ``kill -9``ed holder's lease lives out its TTL; the next holder gets a higher token."""
    ttl = 1.5
    (holder,) = spawn(replicas, url, 1)
    held = holder.ask(f"acquire cluster {ttl}")
    assert held["event"] == "acquired"
    holder.kill()

    survivor = backend(url)
    # CLOCK_MONOTONIC is shared by every process on the host, so the child's send time and
    # ours are on one time line.
    lease = acquire_within(survivor, "cluster", Holder.new("survivor"), ttl=ttl, timeout=WAIT)
    assert time.monotonic() >= held["sent_at"] + ttl
    assert lease.token > held["token"]


def test_holder_in_another_process_blocks_until_released_and_release_wakes_waiter(
    url: str, replicas: list[Replica]
) -> None:
    """A follower in another process waits while the lease is held and wakes on release."""
    (holder,) = spawn(replicas, url, 1)
    held = holder.ask("acquire cluster 60")
    assert held["event"] == "acquired"
    follower = backend(url)
    assert follower.try_acquire("cluster", Holder.new("f"), ttl=60) is None

    waiter, woke = start_waiter(follower, "cluster", WAIT)
    assert not woke.wait(0.3), "wait_for_change returned while the lease was still held"
    assert holder.ask("release")["event"] == "released"
    assert woke.wait(WAIT / 3), "the waiter slept on after the release"
    waiter.join(WAIT)
    lease = follower.try_acquire("cluster", Holder.new("f"), ttl=60)
    assert lease is not None and lease.token == held["token"] + 1


def test_claims_survive_kill_9_right_after_claim_returns(url: str, replicas: list[Replica]) -> None:
    """Every claim a process saw returned is on disk even though it was SIGKILLed at once."""
    (holder,) = spawn(replicas, url, 1)
    held = holder.ask("acquire cluster 60")
    assert held["event"] == "acquired"
    holder.send("claim-then-die 20")
    keys = [holder.expect("claimed")["key"] for _ in range(20)]
    assert holder.proc.wait(timeout=WAIT) == -signal.SIGKILL

    observer = backend(url)
    since = datetime(2026, 1, 1, tzinfo=UTC)
    assert observer.claimed("cluster", "job", since, since + timedelta(days=1)) == set(keys)
    history = observer.history("cluster", "job", 100)
    assert [run.key for run in history] == sorted(keys, reverse=True)
    assert all(run.token == held["token"] for run in history)


def test_write_lock_held_by_another_connection_gives_backend_unavailable(url: str) -> None:
    """A write lock held past op_timeout surfaces as BackendUnavailable, within the timeout."""
    b = backend(url, op_timeout=0.3)
    b.check()  # creates the file and schema
    blocker = sqlite3.connect(path_from_url(url), isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as unavailable:
            b.try_acquire("cluster", Holder.new("a"), ttl=10)
        assert time.monotonic() - started < 3.0
        assert "locked" in str(unavailable.value)
        assert b.url in str(unavailable.value)
        blocker.execute("ROLLBACK")
        assert b.try_acquire("cluster", Holder.new("a"), ttl=10) is not None
    finally:
        blocker.close()
        b.close()


# -- URLs and paths -----------------------------------------------------------------------------


def test_relative_url_resolves_against_cwd_at_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``sqlite:///sub/dir/x.db`` is under the current directory; parents are created."""
    monkeypatch.chdir(tmp_path)
    b = SqliteBackend.from_url("sqlite:///sub/dir/x.db", op_timeout=5.0, clock=FakeClock())
    monkeypatch.chdir("/")  # a later chdir must not move the database
    assert b.path == tmp_path / "sub" / "dir" / "x.db"
    assert b.url == "sqlite:///sub/dir/x.db"
    b.check()
    b.close()
    assert (tmp_path / "sub" / "dir" / "x.db").is_file()


def test_absolute_url_resolves_to_absolute_path(tmp_path: Path) -> None:
    """``sqlite:////abs/x.db`` (four slashes) is the absolute path /abs/x.db."""
    url = f"sqlite:///{tmp_path}/nested/x.db"
    assert url.startswith("sqlite:////")
    b = from_url(url, op_timeout=5.0, clock=FakeClock())
    assert isinstance(b, SqliteBackend)
    assert b.path == tmp_path / "nested" / "x.db"
    assert b.url == url
    b.check()
    b.close()
    assert (tmp_path / "nested" / "x.db").is_file()


@pytest.mark.parametrize(
    "bad",
    [
        "sqlite://host/x.db",
        "sqlite:///",
        "sqlite:////tmp/",
        "sqlite:///x.db?mode=ro",
        "sqlite:///:memory:",
    ],
)
def test_malformed_url_is_config_error(bad: str) -> None:
    """A URL that names no usable file is refused at construction, naming the key and
    echoing the URL redacted (option values hidden)."""
    with pytest.raises(ConfigError) as error:
        SqliteBackend.from_url(bad, op_timeout=5.0, clock=FakeClock())
    assert error.value.key == "backend"
    assert redact(bad) in str(error.value)


def test_path_that_is_a_directory_is_a_permanent_error(tmp_path: Path) -> None:
    """A URL naming a directory fails for good with a clear message, not a raw sqlite3
    error (retrying cannot turn a directory into a file)."""
    (tmp_path / "adir").mkdir()
    b = SqliteBackend.from_url(f"sqlite:///{tmp_path}/adir", op_timeout=5.0, clock=FakeClock())
    with pytest.raises(BackendPermanentError, match="is a directory"):
        b.check()


def test_parent_that_is_a_file_is_a_permanent_error(tmp_path: Path) -> None:
    """A URL under a regular file names the file that is in the way, and is not retried."""
    (tmp_path / "afile").write_text("")
    b = SqliteBackend.from_url(
        f"sqlite:///{tmp_path}/afile/x.db", op_timeout=5.0, clock=FakeClock()
    )
    with pytest.raises(BackendPermanentError, match="afile is a file, not a directory"):
        b.read("cluster")


def test_non_database_file_is_a_schema_error(tmp_path: Path) -> None:
    """A URL pointing at some other file is reported as such, for good."""
    (tmp_path / "notes.txt").write_text("not a database\n" * 200)
    b = SqliteBackend.from_url(f"sqlite:///{tmp_path}/notes.txt", op_timeout=5.0, clock=FakeClock())
    with pytest.raises(BackendSchemaError, match="not a usable Baton database"):
        b.check()


PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2

PROBE = r"""
import sys
from scheduler.backends.sqlite import SqliteBackend
from scheduler.clock import SYSTEM_CLOCK
try:
    SqliteBackend.from_url(sys.argv[1], op_timeout=2.0, clock=SYSTEM_CLOCK).check()
except BaseException as exc:
    print(f"{type(exc).__module__}.{type(exc).__name__}: {exc}")
else:
    print("ok")
"""


def _obey_file_permissions() -> None:
    """In the child, before exec: drop root's power to ignore file permissions.

    Root bypasses permission bits through CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH; removing
    them from the bounding set makes the exec'd probe an ordinary user as far as files go.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


@pytest.mark.parametrize("where", ["new-file-in-readonly-dir", "missing-dir-under-readonly-dir"])
def test_unwritable_location_is_read_only_error_with_os_reason(where: str) -> None:
    """Permission denied is reported as BackendReadOnlyError (permanent) with the OS's words."""
    top = Path(tempfile.mkdtemp(prefix="baton-ro-"))
    try:
        top.chmod(0o755)
        locked = top / "locked"
        locked.mkdir(mode=0o555)
        locked.chmod(0o555)
        target = locked / "x.db" if where.startswith("new-file") else locked / "sub" / "x.db"
        out = subprocess.run(
            [sys.executable, "-c", PROBE, f"sqlite:///{target}"],
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
            preexec_fn=_obey_file_permissions if os.geteuid() == 0 else None,
        )
        message = out.stdout.strip()
        expected = f"scheduler.errors.{BackendReadOnlyError.__name__}: "
        assert message.startswith(expected), (message, out.stderr)
        assert "Permission denied" in message
        assert str(target.parent if where.startswith("missing") else target) in message
    finally:
        (top / "locked").chmod(0o755)
        for path in sorted(top.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        top.rmdir()


def test_schema_version_is_stored(url: str) -> None:
    """The file records its schema version so a later Baton can migrate it."""
    b = backend(url)
    b.check()
    b.close()
    with sqlite3.connect(path_from_url(url)) as raw:
        (version,) = raw.execute("PRAGMA user_version").fetchone()
        (mode,) = raw.execute("PRAGMA journal_mode").fetchone()
    assert version == SCHEMA_VERSION == 3
    assert mode == "wal"


def test_version_1_file_is_upgraded_in_place(url: str) -> None:
    """A file from before presence and controls gains their tables and keeps its runs."""
    path = path_from_url(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as raw:
        raw.execute(
            "CREATE TABLE tokens (name TEXT PRIMARY KEY, last_token INTEGER NOT NULL, "
            "releases INTEGER NOT NULL DEFAULT 0)"
        )
        raw.execute("INSERT INTO tokens VALUES ('c', 41, 0)")
        raw.execute("PRAGMA user_version = 1")
    b = backend(url)
    b.set_control("c", "resign", "7")
    assert b.controls("c") == {"resign": "7"}
    lease = b.try_acquire("c", Holder.new("r1"), 5)
    assert lease is not None and lease.token == 42
    b.close()
    with sqlite3.connect(path) as raw:
        (version,) = raw.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION


# The tables of a version-2 file, as Baton wrote them before runs gained their attempt.
_V2_SCHEMA = (
    "CREATE TABLE lease (name TEXT PRIMARY KEY, holder_id TEXT NOT NULL, token INTEGER NOT NULL,"
    " replica TEXT NOT NULL, host TEXT NOT NULL, since_iso TEXT NOT NULL, ttl REAL NOT NULL,"
    " expires_mono REAL NOT NULL, boot_id TEXT NOT NULL)",
    "CREATE TABLE tokens (name TEXT PRIMARY KEY, last_token INTEGER NOT NULL,"
    " releases INTEGER NOT NULL DEFAULT 0)",
    "CREATE TABLE runs (name TEXT NOT NULL, job TEXT NOT NULL, fire_key INTEGER NOT NULL,"
    " token INTEGER NOT NULL, outcome TEXT NOT NULL, record TEXT NOT NULL,"
    " PRIMARY KEY (name, job, fire_key))",
    "CREATE TABLE members (name TEXT NOT NULL, replica_id TEXT NOT NULL, record TEXT NOT NULL,"
    " expires_mono REAL NOT NULL, boot_id TEXT NOT NULL, PRIMARY KEY (name, replica_id))",
    "CREATE TABLE controls (name TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " PRIMARY KEY (name, key))",
)


def write_version_2_file(path: Path, old_run: RunRecord) -> None:
    """A version-2 database holding ``old_run`` as that version stored it (no attempt)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    record = old_run.to_dict()
    del record["attempt"]
    with sqlite3.connect(path) as raw:
        for statement in _V2_SCHEMA:
            raw.execute(statement)
        raw.execute("INSERT INTO tokens VALUES ('c', 41, 0)")
        raw.execute(
            "INSERT INTO runs VALUES ('c', ?, ?, ?, ?, ?)",
            (old_run.job, old_run.key, old_run.token, old_run.outcome, json.dumps(record)),
        )
        raw.execute("PRAGMA user_version = 2")


def test_version_2_file_is_upgraded_in_place(url: str) -> None:
    """A file from before claim attempts gains ``runs.attempt``; its runs read with attempt
    "", which no attempt matches, so they cannot be started, finished or given back."""
    path = path_from_url(url)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    old_run = RunRecord("job", base, "r0", 41, base, outcome="running", attempt="")
    write_version_2_file(path, old_run)

    b = backend(url)
    [stored] = b.history("c", "job", 10)
    assert stored == old_run and stored.attempt == ""
    lease = b.try_acquire("c", Holder.new("r1"), 5)
    assert lease is not None and lease.token == 42
    b.finish("c", stored.finished("ok", base))
    assert not b.unclaim("c", stored)
    assert b.claim(lease, RunRecord("job", base, "r1", lease.token, base), Retention()) is None
    assert b.claim(lease, replace(old_run, token=lease.token), Retention()) is None
    with pytest.raises(ClaimLost):
        b.start(lease, stored.started_now(base))
    assert b.lookup("c", "job", base) == old_run
    later = RunRecord("job", base + timedelta(minutes=1), "r1", lease.token, base)
    assert b.claim(lease, later, Retention()) == later
    assert b.start(lease, later.started_now(base)) == later.started_now(base)
    b.close()
    with sqlite3.connect(path) as raw:
        (version,) = raw.execute("PRAGMA user_version").fetchone()
        rows = raw.execute("SELECT fire_key, outcome, attempt FROM runs ORDER BY fire_key")
        assert rows.fetchall() == [
            (old_run.key, "running", ""),
            (later.key, "running", later.attempt),
        ]
    assert version == SCHEMA_VERSION


def test_version_2_file_opened_by_a_crowd_is_upgraded_once(tmp_path: Path) -> None:
    """Backends opening one version-2 file together all succeed: the column is added once."""
    failures: list[BaseException] = []
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for attempt in range(20):
        url = f"sqlite:///{tmp_path}/{attempt}.db"
        write_version_2_file(path_from_url(url), RunRecord("job", base, "r0", 41, base))
        failures.extend(_open_together(url, 4))
    assert not failures, failures[:3]


def test_newer_schema_is_refused(url: str) -> None:
    """A file written by a newer Baton is refused rather than misread."""
    path = path_from_url(url)
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(BackendSchemaError, match="schema version 99"):
        backend(url).check()


def test_tokens_never_reused_after_release(url: str) -> None:
    """Release deletes the lease but not its token counter: tokens keep growing."""
    b = backend(url)
    tokens = []
    for _ in range(3):
        lease = b.try_acquire("cluster", Holder.new("a"), ttl=10)
        assert lease is not None
        tokens.append(lease.token)
        b.release(lease)
    reopened = backend(url)
    lease = reopened.try_acquire("cluster", Holder.new("b"), ttl=10)
    assert lease is not None
    assert [*tokens, lease.token] == [1, 2, 3, 4]


def test_retention_never_trims_within_protect_window(url: str) -> None:
    """Trimming stops at the protect window even when the job has more than ``limit`` runs."""
    b = backend(url, clock=FakeClock())
    lease = b.try_acquire("cluster", Holder.new("a"), ttl=10)
    assert lease is not None
    base = datetime(2026, 1, 1, tzinfo=UTC)
    retention = Retention(limit=2, protect=300)  # fires up to 5 min before are protected
    for minute in range(10):
        run = RunRecord("job", base + timedelta(minutes=minute), "a", lease.token, base)
        assert b.claim(lease, run, retention) == run
        b.finish("cluster", run.finished("ok", base))  # only finished runs are trimmed
    minutes = [run.scheduled_time.minute for run in b.history("cluster", "job", 100)]
    # Claiming minute 9 protects minutes 4..9 (the boundary is inside); older ones went.
    assert minutes == [9, 8, 7, 6, 5, 4]


def test_close_wakes_a_waiter(url: str) -> None:
    """close() releases a thread blocked in wait_for_change at once."""
    b = backend(url)
    assert b.try_acquire("cluster", Holder.new("a"), ttl=60) is not None
    waiter, done = start_waiter(b, "cluster", WAIT)
    b.close()
    assert done.wait(WAIT / 3)
    waiter.join(WAIT)


def test_release_through_the_same_instance_wakes_its_waiter(url: str) -> None:
    """A waiter sharing the releasing connection wakes at once (data_version cannot tell it)."""
    b = backend(url)
    lease = b.try_acquire("cluster", Holder.new("a"), ttl=60)
    assert lease is not None
    waiter, done = start_waiter(b, "cluster", WAIT)
    assert not done.wait(0.2), "wait_for_change returned while the lease was still held"
    b.release(lease)
    assert done.wait(WAIT / 3)
    waiter.join(WAIT)


def test_waiter_wakes_when_the_watched_lease_expires(url: str) -> None:
    """A holder that dies without releasing still wakes followers once its TTL runs out."""
    clock = FakeClock()
    holder = backend(url, clock=clock)
    follower = backend(url, clock=clock)
    assert holder.try_acquire("cluster", Holder.new("a"), ttl=10) is not None
    waiter, done = start_waiter(follower, "cluster", WAIT)
    clock.advance(5)
    assert not done.wait(0.2), "wait_for_change returned before the lease expired"
    clock.advance(5)
    assert done.wait(WAIT / 3)
    waiter.join(WAIT)


def test_loss_shows_at_renewal_without_a_notifier(url: str) -> None:
    """SQLite pushes no notifications: it is no LeaseNotifier, watch_lease() declines, and
    renewal detects the loss."""
    clock = FakeClock()
    b = backend(url, clock=clock)
    lease = b.try_acquire("cluster", Holder.new("a"), ttl=10)
    assert lease is not None
    reasons: list[str] = []
    assert not isinstance(b, LeaseNotifier)
    assert watch_lease(b, lease, reasons.append) is False
    clock.advance(11)
    with pytest.raises(LeaseLost) as caught:
        b.renew(lease)
    assert caught.value.reason == LossReason.EXPIRED
    b.release(lease)
    assert reasons == []


def test_a_lease_call_waiting_for_the_connection_goes_before_calls_waiting_with_it(
    tmp_path: Path,
) -> None:
    """While one call holds the connection, a lease call (urgent) waiting for it gets it
    before any other call waiting then (a batch's next chunk), even one that began waiting
    first: a renewal waits for one transaction at most, never for a whole batch."""
    db = Database(tmp_path / "b.db", url="sqlite:///b.db", create=True, op_timeout=WAIT)
    order: list[str] = []
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.session():
            held.set()
            release.wait(WAIT)

    def call(label: str, urgent: bool) -> None:
        with db.session(urgent=urgent):
            order.append(label)

    threads = [threading.Thread(target=hold, daemon=True)]
    threads[0].start()
    assert held.wait(WAIT)
    for label, urgent, waiting in (("chunk", False, (0, 1)), ("renewal", True, (1, 2))):
        threads.append(threading.Thread(target=call, args=(label, urgent), daemon=True))
        threads[-1].start()
        deadline = time.monotonic() + WAIT
        while db.waiting != waiting:
            assert time.monotonic() < deadline, f"{label} never waited: {db.waiting}"
            time.sleep(0.001)
    release.set()
    for thread in threads:
        thread.join(WAIT)

    assert order == ["renewal", "chunk"]
    assert db.waiting == (0, 0)
    db.close()
