"""etcd's lease TTLs: whole seconds, never below the server's minimum. No I/O (the
configuration checks ``lease_ttl`` with it without importing the client)."""

from __future__ import annotations

import math

from scheduler.backends.rules import check_ttl
from scheduler.errors import ConfigError

#: Seconds: the shortest ``lease_ttl`` the configuration accepts for etcd, etcd's own
#: minimum lease TTL with its default timings (``1.5 x`` the 1 s election timeout, rounded
#: up to whole seconds). Shorter TTLs would be raised by etcd anyway: a crashed leader would
#: be replaced after this long, not after ``lease_ttl``.
ETCD_MIN_TTL = 2.0


def check_lease_ttl(lease_ttl: float) -> None:
    """Refuse a ``lease_ttl`` etcd would not keep as asked.

    Raises:
        ConfigError: ``lease_ttl`` is below :data:`ETCD_MIN_TTL` (key ``lease_ttl``).
    """
    if lease_ttl < ETCD_MIN_TTL:
        raise ConfigError(
            "lease_ttl",
            f"must be at least {ETCD_MIN_TTL:g} s with an etcd backend (etcd's minimum lease "
            f"TTL; it would keep a crashed leader's key that long anyway), got {lease_ttl:g}",
        )


def lease_seconds(ttl: float) -> int:
    """The etcd lease TTL for a Baton TTL of ``ttl`` seconds: whole seconds, never less."""
    return max(1, math.ceil(check_ttl(ttl)))


__all__ = ["ETCD_MIN_TTL", "check_lease_ttl", "lease_seconds"]
