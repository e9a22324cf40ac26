"""Permanent backend errors on real servers: refused at start-up, never retried as transient.

Credentials refused, a Redis ACL that denies a command, key or channel, a ZooKeeper ACL, a
read-only SQLite file or directory, a schema from a newer Baton, ZooKeeper nodes not
protected by our ACL: ``baton run`` exits 2 with one line before it joins. Found later, the
refusal is logged once at error level, leadership ends, ``/readyz`` says why, and only a
slow silent re-check notices the fix. Also here: the ZooKeeper read commands' time bound and
kazoo's log lines kept off stderr.
"""

from __future__ import annotations

import io
import json
import logging
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from kazoo.client import KazooClient
from kazoo.security import make_acl, make_digest_acl
from structlog.testing import capture_logs

from scheduler.backends import from_url
from scheduler.backends.sqlite import SqliteBackend
from scheduler.backends.zookeeper import ZooKeeperBackend, ZooKeeperOptions
from scheduler.errors import (
    BackendAuthError,
    BackendPermanentError,
    BackendReadOnlyError,
    BackendSchemaError,
    BackendUnprotectedError,
)
from scheduler.leadership.elector import Elector
from scheduler.leadership.events import TermEnded, TermEvent
from scheduler.leadership.lease import Holder
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.cli import READ_TIMEOUT
from scheduler.ops.logs import configure
from scheduler.ops.metrics import Metrics
from tests.harness.cli import baton as run_baton
from tests.harness.process_server import HOST, free_port
from tests.harness.readonly import obey_file_permissions
from tests.harness.redis_server import RedisServer
from tests.harness.replicas import ROOT, wait_for
from tests.harness.zookeeper_server import ZooKeeperServer

pytestmark = pytest.mark.slow

USER, PASSWORD = "baton", "correct-horse-battery"
JOBS = """
from scheduler import singleton_job

@singleton_job(every="1s", name="perm.tick")
def tick(ctx): ...
"""
#: Seconds a test waits for something a replica does within a few renewals.
WAIT = 10.0


def baton(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    obey_permissions: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``baton`` in ``cwd``; ``obey_permissions``: without the capabilities that let root
    ignore file modes (see tests/harness/readonly.py)."""
    return run_baton(
        *args,
        cwd=cwd,
        env=env,
        timeout=timeout,
        preexec_fn=obey_file_permissions if obey_permissions else None,
    )


def one_line(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> str:
    """The single ``baton: error:`` line of ``result``, after checking the exit code."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("baton: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


@pytest.fixture
def cluster() -> str:
    """A short election name unique to this test (names are at most 64 characters)."""
    return f"perm-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A directory with a jobs module ``permjobs``."""
    (tmp_path / "permjobs.py").write_text(textwrap.dedent(JOBS))
    return tmp_path


# --- Redis ------------------------------------------------------------------------------------


@pytest.fixture
def acl_user(redis_server: RedisServer) -> Iterator[Callable[..., tuple[str, str]]]:
    """Create Redis ACL users on the session server: ``make(*rules)`` -> (name, URL)."""
    admin = redis_server.client()
    made: list[str] = []

    def make(*rules: str) -> tuple[str, str]:
        name = f"u-{uuid.uuid4().hex[:10]}"
        admin.execute_command("ACL", "SETUSER", name, "on", ">user-pw", *rules)
        made.append(name)
        return name, f"redis://{name}:user-pw@{HOST}:{redis_server.port}/0"

    yield make
    for name in made:
        admin.execute_command("ACL", "DELUSER", name)
    admin.close()


#: Everything a replica needs, for every cluster.
FULL = ("~baton:*", "&baton:*", "+@all")


def refused_evalsha(admin: Any) -> int:
    """How many EVALSHA calls the Redis server has refused so far (its ACL said no)."""
    stats = admin.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("rejected_calls", 0))


@pytest.mark.parametrize(
    ("rules", "says"),
    [
        (("~*", "&*", "+@all", "-evalsha"), "evalsha"),
        (("~*", "&*", "+@all", "-script|load"), "script|load"),
        (("~other:*", "&*", "+@all"), "keys"),
        (("~*", "+@all"), "channel"),
        (("~*", "&*", "+@all", "-publish"), "can't run this command"),
        (("~*", "&*", "+@all", "-del"), "del"),
        (("~*", "&*", "+@all", "-zrangebyscore"), "can't run this command"),
        (("~*", "&*", "+@all", "-subscribe"), "subscribe"),
    ],
    ids=["no-evalsha", "no-script-load", "key-pattern", "no-channel", "no-publish", "no-del",
         "no-zrangebyscore", "no-subscribe"],
)  # fmt: skip
def test_redis_preflight_refuses_each_missing_permission(
    acl_user: Callable[..., tuple[str, str]], rules: tuple[str, ...], says: str, cluster: str
) -> None:
    """check() passes (PING), but the preflight plays every operation and finds the ACL
    that denies one of them: BackendAuthError, permanent, naming what is denied."""
    _, url = acl_user(*rules)
    backend = from_url(url, op_timeout=1.0)
    try:
        backend.check()
        with pytest.raises(BackendAuthError) as refused:
            backend.preflight(cluster)
    finally:
        backend.close()
    assert isinstance(refused.value, BackendPermanentError)
    assert "permission denied" in str(refused.value) and says in str(refused.value)


def test_redis_preflight_passes_with_a_cluster_scoped_acl_and_leaves_nothing(
    acl_user: Callable[..., tuple[str, str]], redis_server: RedisServer, cluster: str
) -> None:
    """A user limited to its cluster's keys and channel passes, twice, and the probe keys
    are gone afterwards (only the real lease, untouched, could remain: there is none)."""
    _, url = acl_user(f"~baton:{{{cluster}}}:*", f"&baton:{{{cluster}}}:events", "+@all")
    backend = from_url(url, op_timeout=1.0)
    try:
        backend.preflight(cluster)
        backend.preflight(cluster)
    finally:
        backend.close()
    assert redis_server.client().keys(f"baton:{{{cluster}}}:*") == []


def test_redis_run_exits_2_for_a_wrong_password_or_a_user_without_scripts(
    acl_user: Callable[..., tuple[str, str]], project: Path, cluster: str
) -> None:
    """At start-up, before joining: one line, exit 2, never the password."""
    _, url = acl_user("~*", "&*", "+@all", "-evalsha")
    wrong = url.replace(":user-pw@", ":not-the-pw@")
    run = ("run", "--jobs", "permjobs", "--cluster", cluster, "--backend")
    line = one_line(baton(*run, wrong, cwd=project), 2, "authentication failed")
    assert "not-the-pw" not in line
    one_line(baton(*run, url, cwd=project), 2, "permission denied", "evalsha")


def test_refusal_found_later_is_logged_once_ends_leadership_and_a_fix_is_noticed(
    acl_user: Callable[..., tuple[str, str]], redis_server: RedisServer, cluster: str
) -> None:
    """EVALSHA revoked from a leading replica: leadership ends with reason
    ``backend_refused``, one error line over many renew intervals and re-checks (no
    ``backend_unavailable`` retry lines); once granted again, the re-check clears it."""
    name, url = acl_user(*FULL)
    admin = redis_server.client()
    backend = from_url(url, op_timeout=0.3)
    events: list[TermEvent] = []
    with capture_logs() as logs:
        elector = Elector(
            backend, cluster, Holder.new("r1"), LeaseTimings.of(1.5), metrics=Metrics()
        )
        elector.refusal_recheck = 0.3
        elector.add_listener(events.append)
        elector.start()
        try:
            wait_for(elector.is_leader, WAIT, "leadership")
            admin.execute_command("ACL", "SETUSER", name, "-evalsha")
            wait_for(lambda: elector.refusal, WAIT, "the refusal")
            assert not elector.is_leader()
            # Six more refused attempts (a re-check every 0.3 s runs EVALSHA): the refusal has
            # been met again and again, and must still be one log line.
            refusals = refused_evalsha(admin)
            wait_for(lambda: refused_evalsha(admin) >= refusals + 6, WAIT, "six more refusals")
            refused = [e for e in logs if e["event"] == "backend_refused"]
            assert len(refused) == 1, refused
            assert refused[0]["log_level"] == "error" and "evalsha" in refused[0]["error"]
            assert not [e for e in logs if e["event"] == "backend_unavailable"]
            lost = [e.reason for e in events if isinstance(e, TermEnded)]
            assert lost == ["backend_refused"]
            assert elector.refusal is not None and "evalsha" in elector.refusal

            admin.execute_command("ACL", "SETUSER", name, "+evalsha")
            wait_for(elector.is_leader, WAIT, "leadership after the fix")
            assert elector.refusal is None
            assert [e for e in logs if e["event"] == "backend_refusal_cleared"]
        finally:
            elector.stop()
            backend.close()
            admin.close()


def test_readyz_reports_a_refusal_found_later(
    acl_user: Callable[..., tuple[str, str]],
    redis_server: RedisServer,
    project: Path,
    cluster: str,
) -> None:
    """A real replica whose user loses EVALSHA while it leads: /readyz turns 503 with the
    reason, and its log has exactly one backend_refused line and no retry lines."""
    name, url = acl_user(*FULL)
    port = free_port()
    log_path = project / "replica.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(project), str(ROOT)]),
        BATON_HTTP_PORT=str(port),
        BATON_HTTP_HOST=HOST,
        BATON_LEASE_TTL="2",
    )
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "run", "--backend", url, "--cluster", cluster,
             "--jobs", "permjobs", "--log-format", "json", "--replica-id", "r1"],
            cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    admin = redis_server.client()

    def readyz() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/readyz", timeout=2) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            return 0, ""

    def events(name: str) -> list[dict[str, Any]]:
        lines = log_path.read_text(errors="replace").splitlines()
        parsed = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in parsed if e.get("event") == name]

    try:
        wait_for(lambda: events("leadership_acquired"), WAIT, "leadership")
        wait_for(lambda: readyz()[0] == 200, WAIT, "/readyz 200")
        admin.execute_command("ACL", "SETUSER", name, "-evalsha")

        def refused() -> str | None:
            status, text = readyz()
            return text if status == 503 else None

        body = wait_for(refused, WAIT, "/readyz 503")
        assert "permission denied" in body and "evalsha" in body, body
        # An observation window, not a wait: refused, the replica stays quiet until its re-check
        # (30 s away), so there is no event to wait for. 3 s is four renew intervals (TTL 2 s),
        # in which a loop that retried the refusal would have logged it again.
        time.sleep(3.0)
        assert len(events("backend_refused")) == 1, log_path.read_text()
        assert not events("backend_unavailable"), log_path.read_text()
        assert [e["reason"] for e in events("leadership_lost")] == ["backend_refused"]
        assert readyz()[0] == 503
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        admin.close()


# --- SQLite -----------------------------------------------------------------------------------


def _existing_db(path: Path) -> None:
    backend = SqliteBackend(path, url=f"sqlite:///{path}")
    backend.preflight("c")
    backend.close()


@pytest.mark.parametrize(
    ("case", "error", "says"),
    [
        ("read-only-file", BackendReadOnlyError, "read-only"),
        ("read-only-directory", BackendReadOnlyError, "not writable"),
        ("new-file-in-read-only-directory", BackendReadOnlyError, "Permission denied"),
        ("newer-schema", BackendSchemaError, "newer than this Baton supports"),
        ("not-a-database", BackendSchemaError, "not a usable Baton database"),
    ],
)
def test_sqlite_run_exits_2_for_a_database_it_cannot_use(
    project: Path, case: str, error: type[BackendPermanentError], says: str
) -> None:
    """Each is permanent (the class says which) and stops ``baton run`` at start-up with one
    line and exit 2; the child obeys file permissions even when the tests run as root."""
    directory = project / "data"
    directory.mkdir()
    db = directory / "baton.db"
    if case in ("read-only-file", "read-only-directory", "newer-schema"):
        _existing_db(db)
    if case == "newer-schema":
        with sqlite3.connect(db) as raw:
            raw.execute("PRAGMA user_version = 99")
    if case == "not-a-database":
        db.write_text("these are my notes\n" * 100)
    if case == "read-only-file":
        db.chmod(0o444)
    if case.endswith("read-only-directory"):
        directory.chmod(0o555)
    try:
        probe = (
            "import sys\n"
            "from scheduler.backends.sqlite import SqliteBackend\n"
            "b = SqliteBackend.from_url(sys.argv[1], op_timeout=2.0)\n"
            "try:\n    b.check(); b.preflight('c')\n"
            "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
        )
        url = f"sqlite:///{db}"
        classified = subprocess.run(
            [sys.executable, "-c", probe, url],
            cwd=ROOT, capture_output=True, text=True, timeout=30,
            preexec_fn=obey_file_permissions,
        )  # fmt: skip
        assert classified.stdout.startswith(error.__name__ + " "), classified
        run = baton(
            "run", "--jobs", "permjobs", "--backend", url, cwd=project, obey_permissions=True
        )
        one_line(run, 2, says)
    finally:
        directory.chmod(0o755)


# --- ZooKeeper ----------------------------------------------------------------------------


@pytest.fixture
def zk_admin(zookeeper_server: ZooKeeperServer) -> Iterator[KazooClient]:
    """A kazoo client with the test credentials."""
    client = zookeeper_server.client(auth=(USER, PASSWORD))
    try:
        yield client
    finally:
        client.stop()
        client.close()


@pytest.fixture
def zk_open() -> Iterator[Callable[[str], ZooKeeperBackend]]:
    """Open ZooKeeper backends (op_timeout 1 s); all closed at teardown."""
    opened: list[ZooKeeperBackend] = []

    def make(url: str) -> ZooKeeperBackend:
        backend = ZooKeeperBackend.from_url(url, op_timeout=1.0, options=ZooKeeperOptions())
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


OURS = [make_digest_acl(USER, PASSWORD, all=True)]
WORLD = [make_acl("world", "anyone", all=True)]


@pytest.mark.parametrize("command", ["leader", "status", "history", "jobs"])
def test_zookeeper_read_commands_give_up_on_a_dead_port_within_the_documented_time(
    project: Path, command: str
) -> None:
    """READ_TIMEOUT (2 s) bounds the wait for a session too; stderr is the one error line,
    no kazoo "Connection dropped" chatter."""
    args = {"history": ("history", "perm.tick"), "jobs": ("jobs", "--jobs", "permjobs")}
    url = f"zookeeper://{HOST}:{free_port()}/baton"
    started = time.monotonic()
    result = baton(*args.get(command, (command,)), "--backend", url, cwd=project)
    took = time.monotonic() - started
    one_line(result, 1, f"no ZooKeeper session within {READ_TIMEOUT:g} s")
    assert result.stdout == ""
    # 2 s of waiting, plus the interpreter's start (about 0.5 s on a busy machine).
    assert took < READ_TIMEOUT + 1.5, took


def test_run_logs_only_json_lines_while_zookeeper_is_down(project: Path) -> None:
    """kazoo logs through structlog: with --log-format json every line on stderr is JSON,
    and kazoo's per-attempt "Connection dropped" warnings are not among them."""
    url = f"zookeeper://{HOST}:{free_port()}/baton"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env["PYTHONPATH"] = os.pathsep.join([str(project), str(ROOT)])
    out, err = project / "run.out", project / "run.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "run", "--backend", url, "--jobs", "permjobs",
             "--log-format", "json"],
            cwd=project, env=env, stdout=stdout, stderr=stderr,
        )  # fmt: skip

    def logged() -> str:
        return out.read_text(errors="replace") + err.read_text(errors="replace")

    # One whole failed attempt to open the backend (kazoo retrying meanwhile) is logged.
    wait_for(lambda: proc.poll() is not None or "backend_unavailable" in logged(), 30, "a retry")
    proc.terminate()
    proc.wait(timeout=30)
    lines = [line for line in logged().splitlines() if line.strip()]
    assert lines, "the replica logged nothing"
    parsed = [json.loads(line) for line in lines]  # raises on any line that is not JSON
    assert not [p for p in parsed if "Connection dropped" in str(p.get("event"))]
    assert [p for p in parsed if p["event"] == "backend_unavailable"]


def test_kazoo_records_route_through_structlog() -> None:
    """After configure(), an error from kazoo is a JSON line with its logger and the
    replica; its warnings (connection chatter) are dropped."""
    root = logging.getLogger()
    saved_handlers, saved_level, saved_config = (
        list(root.handlers),
        root.level,
        structlog.get_config(),
    )
    stream = io.StringIO()
    # Other tests quieten kazoo.client on their own (tests/chaos/targets.py): start clean.
    client_logger = logging.getLogger("kazoo.client")
    saved_client_level = client_logger.level
    client_logger.setLevel(logging.NOTSET)
    try:
        configure("r-logs", "json", stream)
        logging.getLogger("kazoo.client").warning("Connection dropped: refused")
        logging.getLogger("kazoo.client").error("Unhandled exception in connection loop")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        structlog.configure(**saved_config)
        client_logger.setLevel(saved_client_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["event"], line["logger"], line["replica"]) for line in lines] == [
        ("Unhandled exception in connection loop", "kazoo.client", "r-logs")
    ]


def test_zookeeper_run_refuses_a_squatted_chroot_with_the_fix(
    zookeeper_server: ZooKeeperServer, project: Path, cluster: str
) -> None:
    """A chroot created by a client without credentials (world:anyone:cdrwa) is refused at
    start-up: exit 2, one line naming the node, its ACL and how to fix it."""
    chroot = f"/squat-{cluster}"
    squatter = zookeeper_server.client()
    try:
        squatter.create(chroot, b"", acl=WORLD)
    finally:
        squatter.stop()
        squatter.close()
    url = zookeeper_server.url(chroot, USER, PASSWORD)
    run = baton("run", "--jobs", "permjobs", "--cluster", "c1", "--backend", url, cwd=project)
    line = one_line(run, 2, f"node {chroot} has ACL world:anyone:cdrwa", "deleteall", "setAcl")
    assert PASSWORD not in line


def test_zookeeper_preflight_refuses_planted_run_nodes(
    zk_admin: KazooClient,
    zk_open: Callable[[str], ZooKeeperBackend],
    zookeeper_server: ZooKeeperServer,
    cluster: str,
) -> None:
    """Run nodes planted in a world-writable job directory (every tick would look claimed)
    are refused, and so is one planted run node in an otherwise protected directory."""
    chroot = f"/plant-{cluster}"
    runs = f"{chroot}/c1/runs"
    zk_admin.ensure_path(runs, acl=OURS)
    zk_admin.create(f"{runs}/perm.tick", b"", acl=WORLD)
    for i in range(10):
        zk_admin.create(f"{runs}/perm.tick/{1_800_000_000_000 + i * 1000:015d}", b"{}", acl=WORLD)
    backend = zk_open(zookeeper_server.url(chroot, USER, PASSWORD))
    with pytest.raises(BackendUnprotectedError) as refused:
        backend.preflight("c1")
    assert refused.value.path == f"{runs}/perm.tick"
    assert "world:anyone:cdrwa" in str(refused.value) and "10 more nodes" in str(refused.value)

    zk_admin.delete(f"{runs}/perm.tick", recursive=True)
    zk_admin.create(f"{runs}/perm.tick", b"", acl=OURS)
    planted = f"{runs}/perm.tick/{1_800_000_000_000:015d}"
    zk_admin.create(planted, b"{}", acl=WORLD)
    with pytest.raises(BackendUnprotectedError) as refused:
        backend.preflight("c1")
    assert refused.value.path == planted


def test_zookeeper_preflight_refuses_a_tree_made_without_credentials(
    zk_open: Callable[[str], ZooKeeperBackend], zookeeper_server: ZooKeeperServer, cluster: str
) -> None:
    """Nodes left by an earlier deployment without credentials are world-writable: adding
    credentials later is refused until they are deleted or protected."""
    chroot = f"/legacy-{cluster}"
    zk_open(zookeeper_server.url(chroot)).preflight("c1")  # creates the tree, open to all
    protected = zk_open(zookeeper_server.url(chroot, USER, PASSWORD))
    with pytest.raises(BackendUnprotectedError, match="world:anyone:cdrwa") as refused:
        protected.preflight("c1")
    assert refused.value.path == chroot


def test_zookeeper_preflight_creates_the_tree_under_our_acl_and_allows_world_read(
    zk_admin: KazooClient,
    zk_open: Callable[[str], ZooKeeperBackend],
    zookeeper_server: ZooKeeperServer,
    cluster: str,
) -> None:
    """A chroot that others may only read passes; the preflight leaves the election's
    directories, each with our ACL alone, and no probe node."""
    chroot = f"/fresh-{cluster}"
    zk_admin.create(chroot, b"", acl=[*OURS, make_acl("world", "anyone", read=True)])
    zk_open(zookeeper_server.url(chroot, USER, PASSWORD)).preflight("c1")
    assert sorted(zk_admin.get_children(f"{chroot}/c1")) == ["controls", "latch", "members", "runs"]
    for child in ("", "/controls", "/latch", "/members", "/runs"):
        acls, _ = zk_admin.get_acls(f"{chroot}/c1{child}")
        assert [(a.id.scheme, a.id.id.split(":")[0], a.perms) for a in acls] == [
            ("digest", USER, 31)
        ]


def test_zookeeper_noauth_found_later_stops_competing_once(
    zk_admin: KazooClient,
    zk_open: Callable[[str], ZooKeeperBackend],
    zookeeper_server: ZooKeeperServer,
    cluster: str,
) -> None:
    """A follower whose latch directory gets another identity's ACL: NoAuth is a permanent
    refusal, logged once, not a retry loop."""
    chroot = f"/noauth-{cluster}"
    url = zookeeper_server.url(chroot, USER, PASSWORD)
    leader = zk_open(url)
    assert leader.try_acquire("c1", Holder.new("r0"), 5.0) is not None
    with capture_logs() as logs:
        elector = Elector(
            zk_open(url), "c1", Holder.new("r1"), LeaseTimings.of(1.5), metrics=Metrics()
        )
        elector.refusal_recheck = 60.0
        elector.start()
        try:
            latch = f"{chroot}/c1/latch"
            wait_for(lambda: len(zk_admin.get_children(latch)) == 2, WAIT, "r1 to queue")
            zk_admin.set_acls(latch, [make_digest_acl("other", "pw", all=True)])
            wait_for(lambda: elector.refusal, WAIT, "the refusal")
            # An observation window, not a wait: refused, the elector stays quiet until its
            # re-check (60 s away), so there is no event to wait for; 1.5 s is three renew
            # intervals (TTL 1.5 s), in which a retry loop would have logged again.
            time.sleep(1.5)
        finally:
            elector.stop()
    refused = [e for e in logs if e["event"] == "backend_refused"]
    assert len(refused) == 1 and "permission denied by a ZooKeeper ACL" in refused[0]["error"]
    assert not [e for e in logs if e["event"] == "backend_unavailable"]


def test_permanent_errors_are_user_errors_and_not_unavailable() -> None:
    """The classes: every permanent error is a UserError (exit 2) and never a
    BackendUnavailable (retried); the builtins match what each says."""
    from scheduler.errors import BackendUnavailable, UserError

    for cls in (BackendAuthError, BackendReadOnlyError, BackendSchemaError):
        error = cls("sqlite:///x", "why")
        assert isinstance(error, BackendPermanentError) and isinstance(error, UserError)
        assert not isinstance(error, BackendUnavailable)
    assert isinstance(BackendAuthError("u", "m"), PermissionError)
    assert isinstance(BackendReadOnlyError("u", "m"), PermissionError)
    assert isinstance(BackendSchemaError("u", "m"), ValueError)
    unprotected = BackendUnprotectedError("u", "/baton", "m")
    assert unprotected.path == "/baton" and isinstance(unprotected, UserError)
