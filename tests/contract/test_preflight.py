"""The preflight contract, on every backend: it passes on a usable backend, can be repeated,
and leaves nothing another replica or an operator could see."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.backends import Backend
from scheduler.leadership.lease import Holder


def test_preflight_passes_and_leaves_no_trace(
    make_backend: Callable[..., Backend], election: str
) -> None:
    """Twice in a row, then: no leader, no member, no control, no history; and a replica
    acquires with a first token as usual."""
    backend = make_backend()
    backend.check()
    backend.preflight(election)
    backend.preflight(election)
    observer = make_backend()
    assert observer.read(election) is None
    assert observer.members(election) == []
    assert observer.controls(election) == {}
    assert observer.history(election, "preflight", 10) == []
    lease = backend.try_acquire(election, Holder.new("r1"), 5.0)
    assert lease is not None
    assert observer.read(election) is not None
