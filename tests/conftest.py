"""Shared fixtures: real backend servers, backend URLs per kind, unique election names.

To run the contract suite against a new backend, add its kind to :data:`BACKEND_KINDS` and
a function returning its URL to :data:`_URL_FACTORIES`; nothing else changes.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scheduler.backends import LeaseBackend, from_url
from tests.harness.redis_server import RedisServer

#: Every backend the contract suite runs against, in one place.
BACKEND_KINDS = ("sqlite", "redis")

#: Seconds a backend call may take in tests: long enough for a loaded CI box, short enough
#: that a hung call fails the test quickly.
TEST_OP_TIMEOUT = 1.0


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the whole session; tests keep apart by election name."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


def _sqlite_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/baton.db"


def _redis_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


_URL_FACTORIES: dict[str, Callable[[pytest.FixtureRequest, Path], str]] = {
    "sqlite": _sqlite_url,
    "redis": _redis_url,
}


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
def election(request: pytest.FixtureRequest) -> str:
    """An election name unique to this test run, so tests never share a lease or history."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[-60:]
    return f"{base}-{uuid.uuid4().hex[:12]}"
