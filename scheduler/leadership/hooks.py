"""Process-wide leadership hooks: ``on_leadership_acquired`` / ``on_leadership_lost``.

Hooks run on Baton's hook thread, one at a time, in order of events; a hook that raises is
logged and the next one still runs. A slow hook delays later hooks, never the election.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar


@dataclass(frozen=True, slots=True)
class LeadershipAcquiredEvent:
    """This replica became leader of ``cluster`` with fencing token ``token``."""

    cluster: str
    replica_id: str
    token: int


@dataclass(frozen=True, slots=True)
class LeadershipLostEvent:
    """This replica's term with ``token`` ended; ``reason`` says why (e.g. renew_deadline)."""

    cluster: str
    replica_id: str
    token: int
    reason: str


AcquiredHook = Callable[[LeadershipAcquiredEvent], object]
LostHook = Callable[[LeadershipLostEvent], object]
H = TypeVar("H", bound=Callable[..., object])

_lock = threading.Lock()
_acquired: list[AcquiredHook] = []
_lost: list[LostHook] = []


def on_leadership_acquired(hook: H) -> H:
    """Register ``hook(event)`` to run when this replica becomes leader. Usable as decorator."""
    with _lock:
        _acquired.append(hook)
    return hook


def on_leadership_lost(hook: H) -> H:
    """Register ``hook(event)`` to run when this replica stops leading. Usable as decorator."""
    with _lock:
        _lost.append(hook)
    return hook


def acquired_hooks() -> list[AcquiredHook]:
    with _lock:
        return list(_acquired)


def lost_hooks() -> list[LostHook]:
    with _lock:
        return list(_lost)


def clear() -> None:
    """Forget every registered hook (for tests)."""
    with _lock:
        _acquired.clear()
        _lost.clear()
