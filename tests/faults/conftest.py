"""Fixtures the fault modules share."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from scheduler.backends import from_url
from scheduler.backends.base import Backend

#: Seconds one backend call may take, unless a test asks for another (``op_timeout``).
OP_TIMEOUT = 1.0


@pytest.fixture
def opened() -> Iterator[Callable[..., Backend]]:
    """Open backends by URL; all closed at teardown."""
    backends: list[Backend] = []

    def open_backend(url: str, op_timeout: float = OP_TIMEOUT) -> Backend:
        backend = from_url(url, op_timeout=op_timeout)
        backends.append(backend)
        return backend

    yield open_backend
    for backend in reversed(backends):
        backend.close()
