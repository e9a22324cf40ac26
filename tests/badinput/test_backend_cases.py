"""Bad-input catalogue: backends that refuse us for good, and ZooKeeper at the edges.

A permanent refusal (credentials, an ACL, a read-only database, a newer schema, ZooKeeper
nodes not protected by our ACL) stops ``baton run`` at start-up with one line and exit 2,
before it joins: retrying cannot help. The read commands treat refused credentials the same
way, exit 2 (a configuration mistake, as a bad URL is), and an unreachable backend as exit 1,
within their documented 2 s (ZooKeeper included, with no kazoo chatter on stderr).

Cases needing a prepared backend (a database file, ACL users, planted ZooKeeper nodes) have a
``setup``; it may return values for the ``{user}`` and ``{chroot}`` placeholders, filled in
before the harness fills its own.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from kazoo.client import KazooClient
from kazoo.security import make_acl, make_digest_acl

from scheduler.backends.sqlite import SqliteBackend
from tests.badinput.harness import SENTINEL, Case, check
from tests.harness.readonly import make_read_only
from tests.harness.redis_server import RedisServer
from tests.harness.zookeeper_server import ZooKeeperServer

#: The sentinel percent-encoded, as a password in a URL is written.
ENCODED = "Hunter2-s3cr3t%2Fw%40rd"
JOBS = """
from scheduler import singleton_job

@singleton_job(every="1s", name="cases.tick")
def tick(ctx): ...
"""
#: Seconds a read command may take against a dead port: its 2 s, plus the interpreter.
READ_BOUND = 4.0
RUN = ("run", "--jobs", "badjobs", "--cluster", "cases")
REDIS_USER = "redis://{user}:" + ENCODED + "@127.0.0.1:{redis_port}/0"
ZK_URL = "zookeeper://baton:" + ENCODED + "@{zookeeper_hosts}{chroot}"
Setup = Callable[[Path, pytest.FixtureRequest], dict[str, str]]


@dataclass(frozen=True)
class Item:
    """A case and what to prepare before it runs."""

    case: Case
    setup: Setup | None = None


# --- preparations ----------------------------------------------------------------------------


def _database(path: Path) -> None:
    backend = SqliteBackend(path, url=f"sqlite:///{path}")
    backend.preflight("cases")
    backend.close()


def newer_schema(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    _database(tmp / "b.db")
    with sqlite3.connect(tmp / "b.db") as raw:
        raw.execute("PRAGMA user_version = 99")
    return {}


def notes_file(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    (tmp / "b.db").write_text("my notes, not a database\n" * 100)
    return {}


def read_only_file(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    _database(tmp / "b.db")
    request.addfinalizer(make_read_only(tmp / "b.db"))
    return {}


def read_only_dir(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    (tmp / "ro").mkdir()
    _database(tmp / "ro" / "b.db")
    request.addfinalizer(make_read_only(tmp / "ro"))
    return {}


def empty_read_only_dir(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    (tmp / "ro").mkdir()
    request.addfinalizer(make_read_only(tmp / "ro"))
    return {}


def a_directory(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    (tmp / "adir").mkdir()
    return {}


def redis_user(*rules: str) -> Setup:
    """A Redis ACL user (password: the sentinel) with ``rules``, on the session server."""

    def setup(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
        server: RedisServer = request.getfixturevalue("redis_server")
        name = f"case-{uuid.uuid4().hex[:10]}"
        admin = server.client()
        admin.execute_command("ACL", "SETUSER", name, "on", f">{SENTINEL}", *rules)
        admin.close()

        def drop() -> None:
            client = server.client()
            client.execute_command("ACL", "DELUSER", name)
            client.close()

        request.addfinalizer(drop)
        return {"user": name}

    return setup


FULL = ("~*", "&*", "+@all")
OURS = [make_digest_acl("baton", SENTINEL, all=True)]
WORLD = [make_acl("world", "anyone", all=True)]


def zookeeper_tree(build: Callable[[KazooClient, KazooClient, str], None]) -> Setup:
    """A fresh chroot, prepared by ``build(ours, anonymous, chroot)``: a client with the
    sentinel credentials and one without any."""

    def setup(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
        server: ZooKeeperServer = request.getfixturevalue("zookeeper_server")
        chroot = f"/cases-{uuid.uuid4().hex[:12]}"
        ours, anonymous = server.client(auth=("baton", SENTINEL)), server.client()
        try:
            build(ours, anonymous, chroot)
        finally:
            for client in (ours, anonymous):
                client.stop()
                client.close()
        return {"chroot": chroot}

    return setup


def squatted_chroot(ours: KazooClient, anonymous: KazooClient, chroot: str) -> None:
    anonymous.create(chroot, b"", acl=WORLD)


def planted_runs(ours: KazooClient, anonymous: KazooClient, chroot: str) -> None:
    # Everything ours but one job's run directory, left open to anyone, who planted runs.
    ours.ensure_path(f"{chroot}/cases/runs", acl=OURS)
    ours.create(f"{chroot}/cases/runs/cases.tick", b"", acl=WORLD)
    for i in range(10):
        key = f"{1_800_000_000_000 + i * 1000:015d}"
        anonymous.create(f"{chroot}/cases/runs/cases.tick/{key}", b"{}", acl=WORLD)


def open_tree(ours: KazooClient, anonymous: KazooClient, chroot: str) -> None:
    for node in ("latch", "runs", "controls", "members"):
        anonymous.ensure_path(f"{chroot}/cases/{node}")


def protected_chroot(ours: KazooClient, anonymous: KazooClient, chroot: str) -> None:
    ours.create(chroot, b"", acl=OURS)


def foreign_latch(ours: KazooClient, anonymous: KazooClient, chroot: str) -> None:
    ours.ensure_path(f"{chroot}/cases", acl=OURS)
    ours.create(f"{chroot}/cases/latch", b"", acl=[make_digest_acl("other", "pw", all=True)])


# --- the cases -------------------------------------------------------------------------------


def item(
    id: str,
    args: tuple[str, ...],
    exit: int,
    says: str,
    setup: Setup | None = None,
    timeout: float = 20.0,
) -> Item:
    return Item(Case(id, args, exit=exit, jobs=JOBS, says=says, timeout=timeout), setup)


def dead_zookeeper(command: tuple[str, ...]) -> Item:
    url = "zookeeper://127.0.0.1:{dead_port}/baton"
    return item(
        f"zookeeper-dead-port-{command[0]}",
        (*command, "--backend", url),
        1,
        "no ZooKeeper session within 2 s",
        timeout=READ_BOUND,
    )


ITEMS = [
    # -- SQLite: the file, its directory, its schema --------------------------------------
    item("sqlite-newer-schema-run", (*RUN, "--backend", "sqlite:///{tmp}/b.db"), 2,
         "newer than this Baton supports", newer_schema),
    item("sqlite-newer-schema-leader", ("leader", "--backend", "sqlite:///{tmp}/b.db"), 2,
         "schema version 99", newer_schema),
    item("sqlite-newer-schema-status", ("status", "--backend", "sqlite:///{tmp}/b.db"), 2,
         "upgrade Baton", newer_schema),
    item("sqlite-not-a-database-run", (*RUN, "--backend", "sqlite:///{tmp}/b.db"), 2,
         "not a usable Baton database", notes_file),
    item("sqlite-read-only-file-run", (*RUN, "--backend", "sqlite:///{tmp}/b.db"), 2,
         "read-only", read_only_file),
    item("sqlite-read-only-dir-run", (*RUN, "--backend", "sqlite:///{tmp}/ro/b.db"), 2,
         "not writable", read_only_dir),
    item("sqlite-new-file-in-read-only-dir-run", (*RUN, "--backend", "sqlite:///{tmp}/ro/b.db"),
         2, "cannot open database", empty_read_only_dir),
    item("sqlite-new-dir-under-read-only-dir-run",
         (*RUN, "--backend", "sqlite:///{tmp}/ro/sub/b.db"), 2, "cannot create directory",
         empty_read_only_dir),
    item("sqlite-under-sysfs-run", (*RUN, "--backend", "sqlite:////sys/baton-case.db"), 2,
         "cannot open database"),
    item("sqlite-path-is-directory-run", (*RUN, "--backend", "sqlite:///{tmp}/adir"), 2,
         "is a directory", a_directory),
    item("sqlite-parent-is-file-run", (*RUN, "--backend", "sqlite:///{tmp}/badjobs.py/b.db"), 2,
         "is a file, not a directory"),
    # -- Redis: credentials and ACLs (the user's password is the sentinel) -----------------
    item("redis-wrong-password-run",
         (*RUN, "--backend", "redis://{user}:wrong-pw@127.0.0.1:{redis_port}/0"), 2,
         "authentication failed", redis_user(*FULL)),
    item("redis-wrong-password-leader",
         ("leader", "--backend", "redis://{user}:wrong-pw@127.0.0.1:{redis_port}/0"), 2,
         "authentication failed", redis_user(*FULL)),
    item("redis-disabled-user-run", (*RUN, "--backend", REDIS_USER), 2,
         "authentication failed", redis_user(*FULL, "off")),
    item("redis-no-evalsha-run", (*RUN, "--backend", REDIS_USER), 2, "evalsha",
         redis_user(*FULL, "-evalsha")),
    item("redis-no-evalsha-leader", ("leader", "--backend", REDIS_USER), 2, "evalsha",
         redis_user(*FULL, "-evalsha")),
    item("redis-no-script-load-run", (*RUN, "--backend", REDIS_USER), 2, "script|load",
         redis_user(*FULL, "-script|load")),
    item("redis-other-keys-only-run", (*RUN, "--backend", REDIS_USER), 2, "keys",
         redis_user("~other:*", "&*", "+@all")),
    item("redis-no-channel-run", (*RUN, "--backend", REDIS_USER), 2, "channel",
         redis_user("~*", "+@all")),
    item("redis-no-publish-run", (*RUN, "--backend", REDIS_USER), 2, "permission denied",
         redis_user(*FULL, "-publish")),
    item("redis-ping-only-run", (*RUN, "--backend", REDIS_USER), 2, "permission denied",
         redis_user("~*", "+ping")),
    # -- ZooKeeper: a dead port, within the read commands' 2 s -------------------------------
    dead_zookeeper(("leader",)),
    dead_zookeeper(("status",)),
    dead_zookeeper(("history", "cases.tick")),
    dead_zookeeper(("jobs", "--jobs", "badjobs")),
    # -- ZooKeeper: credentials and nodes not protected by our ACL ---------------------------
    item("zookeeper-squatted-chroot-run", (*RUN, "--backend", ZK_URL), 2,
         "world:anyone:cdrwa", zookeeper_tree(squatted_chroot)),
    item("zookeeper-planted-runs-run", (*RUN, "--backend", ZK_URL), 2,
         "/cases/runs/cases.tick has ACL world:anyone:cdrwa", zookeeper_tree(planted_runs)),
    item("zookeeper-tree-made-without-credentials-run", (*RUN, "--backend", ZK_URL), 2,
         "deleteall", zookeeper_tree(open_tree)),
    item("zookeeper-foreign-latch-run", (*RUN, "--backend", ZK_URL), 2,
         "does not let user 'baton' read it", zookeeper_tree(foreign_latch)),
    item("zookeeper-wrong-password-run",
         (*RUN, "--backend", "zookeeper://baton:wrong-pw@{zookeeper_hosts}{chroot}"), 2,
         "wrong password", zookeeper_tree(protected_chroot)),
    item("zookeeper-wrong-password-leader",
         ("leader", "--backend", "zookeeper://baton:wrong-pw@{zookeeper_hosts}{chroot}"), 2,
         "wrong password", zookeeper_tree(protected_chroot)),
    item("zookeeper-no-credentials-protected-run",
         (*RUN, "--backend", "zookeeper://{zookeeper_hosts}{chroot}"), 2, "user:password",
         zookeeper_tree(protected_chroot)),
]  # fmt: skip


@pytest.mark.parametrize("entry", ITEMS, ids=lambda entry: entry.case.id)
def test_backend_input(entry: Item, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One clear line, the right exit code, no traceback, no secret."""
    values = entry.setup(tmp_path, request) if entry.setup is not None else {}
    args = list(entry.case.args)
    for name, value in values.items():
        args = [arg.replace("{" + name + "}", value) for arg in args]
    case = replace(entry.case, args=tuple(args))
    check(case, tmp_path, request)
