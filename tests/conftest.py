"""Shared fixtures: real backend servers, backend URLs per kind, unique election names.

To run the contract suite against a new backend, add its kind to :data:`BACKEND_KINDS` and
a function returning its URL to :data:`_URL_FACTORIES`; nothing else changes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scheduler.backends import LeaseBackend, from_url
from tests.harness.etcd_server import BATON_PREFIX, EtcdCluster
from tests.harness.postgresql_server import PostgresServer
from tests.harness.redis_cluster import RedisClusterGroup
from tests.harness.redis_sentinel import SentinelGroup
from tests.harness.redis_server import RedisServer
from tests.harness.redlock_group import RedlockGroup
from tests.harness.zookeeper_server import ZooKeeperServer

#: Every backend the contract suite runs against, in one place.
BACKEND_KINDS = (
    "sqlite",
    "redis",
    "zookeeper",
    "postgresql",
    "sentinel",
    "cluster",
    "etcd",
    "redlock",
)

#: Seconds a backend call may take in tests: long enough for a loaded CI box, short enough
#: that a hung call fails the test quickly.
TEST_OP_TIMEOUT = 1.0
#: Seconds to wait for a lease to expire on the server before failing the test.
EXPIRY_WAIT = 5.0
#: Milliseconds the session's Sentinels and Cluster nodes wait before they judge a server
#: down: long, so that a loaded machine never fails them over (see ``redis_sentinel``).
SESSION_DOWN_AFTER_MS = 30_000


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session; tests keep apart by election name."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelGroup]:
    """A primary, 2 replicas and 3 Sentinels for the session (under a second to start).

    A test that injects a fault calls ``heal()`` when done, so the next one finds every
    server up and replicating (the primary may have changed: ask ``primary()``).
    """
    # Never a failover of its own: a promoted replica makes every new election name refuse
    # past fires (the claim epoch), and the contract suite claims fixed past instants. With
    # a 1 s down-after, a primary starved of CPU for a second (two pytest workers) failed
    # over and the suite's claims were refused.
    group = SentinelGroup(down_after_ms=SESSION_DOWN_AFTER_MS).start()
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterGroup]:
    """A 3-primary / 3-replica Redis Cluster for the session (about 3 s to create), which
    never fails over (tests that fail one over make their own, as for ``redis_sentinel``)."""
    group = RedisClusterGroup(node_timeout_ms=SESSION_DOWN_AFTER_MS).start()
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture(scope="session")
def redlock_group() -> Iterator[RedlockGroup]:
    """Three independent redis-servers (a Redlock group of N = 3) for the session.

    A test that kills a primary restarts it when done (``heal()``).
    """
    group = RedlockGroup(3).start()
    try:
        yield group
    finally:
        group.cleanup()


@pytest.fixture(scope="session")
def zookeeper_server() -> Iterator[ZooKeeperServer]:
    """One ZooKeeper server for the whole session; tests keep apart by election name."""
    server = ZooKeeperServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def postgresql_server() -> Iterator[PostgresServer]:
    """One throw-away PostgreSQL cluster for the whole session; tests keep apart by name."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdCluster]:
    """One single-member etcd for the whole session; tests keep apart by election name."""
    cluster = EtcdCluster(size=1).start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


def _sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/baton.db"


def _redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


def _zookeeper_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    server: ZooKeeperServer = request.getfixturevalue("zookeeper_server")
    return server.url()


def _postgresql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    server: PostgresServer = request.getfixturevalue("postgresql_server")
    return server.url()


def _etcd_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    cluster: EtcdCluster = request.getfixturevalue("etcd_server")
    return cluster.url()


def _sentinel_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    group: SentinelGroup = request.getfixturevalue("redis_sentinel")
    return group.url()


def _cluster_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    group: RedisClusterGroup = request.getfixturevalue("redis_cluster")
    return group.url()


def _redlock_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    group: RedlockGroup = request.getfixturevalue("redlock_group")
    return group.url()


_URL_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "sentinel": _sentinel_url,
    "cluster": _cluster_url,
    "postgresql": _postgresql_url,
    "sqlite": _sqlite_url,
    "redis": _redis_url,
    "zookeeper": _zookeeper_url,
    "etcd": _etcd_url,
    "redlock": _redlock_url,
}


def _wait_expired(request: pytest.FixtureRequest, backend: LeaseBackend, name: str) -> None:
    # Redis, SQLite and PostgreSQL expire a lease when its TTL runs out; the tests take
    # short TTLs.
    assert _wait_until(lambda: backend.read(name) is None), "lease never expired"


def _expire_zookeeper_session(
    request: pytest.FixtureRequest, backend: LeaseBackend, name: str
) -> None:
    # A latch node lives as long as its session, whatever the TTL: expire the session the
    # way the server does after a partition, then wait for the backend to have a new one.
    server: ZooKeeperServer = request.getfixturevalue("zookeeper_server")
    session = getattr(backend, "session_id", None)
    assert session is not None, f"{backend!r} has no session to expire"
    server.expire_session(session)
    assert _wait_until(lambda: getattr(backend, "session_id", None) not in (None, session)), (
        "the backend never opened a new session"
    )
    assert _wait_until(lambda: backend.read(name) is None), "lease never expired"


def _expire_etcd_lease(request: pytest.FixtureRequest, backend: LeaseBackend, name: str) -> None:
    # etcd counts lease TTLs in whole seconds, at least its minimum: revoke the holder's
    # etcd lease, which is what etcd itself does when the TTL runs out.
    cluster: EtcdCluster = request.getfixturevalue("etcd_server")
    cluster.expire(f"{BATON_PREFIX}/{name}/lease/holder")
    assert _wait_until(lambda: backend.read(name) is None), "lease never expired"


_EXPIRERS: dict[str, Callable[[pytest.FixtureRequest, LeaseBackend, str], None]] = {
    "sentinel": _wait_expired,
    "cluster": _wait_expired,
    "postgresql": _wait_expired,
    "sqlite": _wait_expired,
    "redis": _wait_expired,
    "zookeeper": _expire_zookeeper_session,
    "etcd": _expire_etcd_lease,
    "redlock": _wait_expired,
}


def _wait_until(condition: Callable[[], bool], timeout: float = EXPIRY_WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture(params=BACKEND_KINDS)
def backend_kind(request: pytest.FixtureRequest) -> str:
    """The kind of backend under test (one parametrization per kind)."""
    return str(request.param)


@pytest.fixture
def backend_url(backend_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of a fresh or shared-but-isolated backend of ``backend_kind``."""
    return _URL_FACTORIES[backend_kind](request, tmp_path)


@pytest.fixture
def make_backend(backend_url: str) -> Iterator[Callable[..., LeaseBackend]]:
    """Open backends on ``backend_url`` (or another URL); all are closed at teardown."""
    opened: list[LeaseBackend] = []

    def make(url: str | None = None, op_timeout: float = TEST_OP_TIMEOUT) -> LeaseBackend:
        backend = from_url(url or backend_url, op_timeout=op_timeout)
        opened.append(backend)
        return backend

    yield make
    for backend in reversed(opened):
        backend.close()


@pytest.fixture
def expire_lease(
    backend_kind: str, request: pytest.FixtureRequest
) -> Callable[[LeaseBackend, str], None]:
    """Make the server expire the lease ``name`` held through ``backend``, and wait for it.

    What expires a lease differs by backend, and only that: a TTL on Redis and SQLite (the
    tests acquire with a short one, so this waits), the session on ZooKeeper (expired here
    through the server). Either way the lease is gone on the server when this returns.
    """
    expire = _EXPIRERS[backend_kind]
    return lambda backend, name: expire(request, backend, name)


@pytest.fixture
def election(request: pytest.FixtureRequest) -> str:
    """An election name unique to this test run, so tests never share a lease or history."""
    # Within the documented cluster charset: 1-128 of [A-Za-z0-9._-], not starting . or -.
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[-60:].lstrip(".-") or "t"
    return f"{base}-{uuid.uuid4().hex[:12]}"


#: Lines of each replica's log shown under a failed test that ran a Cluster.
LOG_TAIL = 40
#: The chaos runs' lines (their seeds), gathered from the reports for the final summary: in
#: this conftest, which the xdist controller loads too (it collects no test module).
_CHAOS_LINES: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather the lines a chaos run attached to its report (tests/chaos/conftest.py)."""
    for key, value in report.user_properties:
        if key == "chaos-run" and value not in _CHAOS_LINES:
            _CHAOS_LINES.append(str(value))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat the chaos runs' lines at the end, where a reader of a CI log looks first."""
    if _CHAOS_LINES:
        terminalreporter.write_sep("-", "chaos runs")
        for line in _CHAOS_LINES:
            terminalreporter.write_line(line)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Attach the tail of every replica's log to a failed test: CI keeps only its output."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when != "call" or not report.failed:
        return
    from tests.harness.replicas import Cluster

    for value in getattr(item, "funcargs", {}).values():
        if not isinstance(value, Cluster):
            continue
        for replica in value:
            try:
                lines = replica.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
            except OSError as exc:
                lines = [f"(unreadable: {exc})"]
            report.sections.append((f"replica {replica.name} log (tail)", "\n".join(lines)))
