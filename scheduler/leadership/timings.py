"""Lease timings, validated together: lease_ttl > renew_deadline > 1.2 * renew_interval.

The bounds are those a client-go or Patroni user expects: a lease lasts between a second and
an hour, the leader renews at most ten times a second, and (client-go's own rule, its
``JitterFactor``) the deadline leaves room for a late renewal beyond one interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scheduler.errors import ConfigError

#: Seconds: the shortest lease. Below it, a GC pause or one slow backend call costs the lease
#: and leadership flaps (0.001 s gave 12,000 changes of leader in 8 s).
LEASE_TTL_MIN = 1.0
#: Seconds: the longest lease (one hour): the most a crashed leader may block the cluster.
LEASE_TTL_MAX = 3600.0
#: Seconds: the shortest renew interval (ten renewals a second is already heavy traffic).
RENEW_INTERVAL_MIN = 0.1
#: ``renew_deadline`` must exceed ``renew_interval`` by this factor (client-go's
#: ``JitterFactor``): one renewal may be late without the leader giving up.
RENEW_SLACK = 1.2
#: Seconds: the bounds of ``op_timeout`` (derived, never configured).
OP_TIMEOUT_MIN, OP_TIMEOUT_MAX = 0.05, 2.0


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """How long a lease lasts and how the leader keeps it. All values in seconds.

    Attributes:
        lease_ttl: how long the backend keeps a lease without renewal (default 10, from 1 to
            3600). This is the longest a crashed leader blocks the cluster: shorter means
            faster failover after ``kill -9`` but more renewal traffic and less tolerance of
            slow backends.
        renew_interval: how often the leader renews (default ``lease_ttl / 3``, at least
            0.1). Shorter means more attempts before the deadline, at more traffic.
        renew_deadline: how long the leader keeps leading without a successful renewal
            before it gives up locally (default ``2 * lease_ttl / 3``; more than
            ``1.2 * renew_interval`` and less than ``lease_ttl``). The gap to ``lease_ttl``
            is the time running jobs get to notice ``ctx.lost`` before another replica can
            take over.
        op_timeout: the bound on any single backend call the elector makes (0.05 to 2),
            derived so that at least two attempts fit between ``renew_interval`` and
            ``renew_deadline``.

    Raises:
        ConfigError: a value is not a finite number of seconds, is out of its range, or is
            inconsistent with another (the message names both fields).
    """

    lease_ttl: float = 10.0
    renew_interval: float = 10.0 / 3
    renew_deadline: float = 20.0 / 3

    @classmethod
    def of(
        cls,
        lease_ttl: float = 10.0,
        renew_interval: float | None = None,
        renew_deadline: float | None = None,
    ) -> LeaseTimings:
        """Timings with the defaults derived from ``lease_ttl`` where not given."""
        return cls(
            lease_ttl=lease_ttl,
            renew_interval=lease_ttl / 3 if renew_interval is None else renew_interval,
            renew_deadline=lease_ttl * 2 / 3 if renew_deadline is None else renew_deadline,
        )

    def __post_init__(self) -> None:
        for key in ("lease_ttl", "renew_interval", "renew_deadline"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(key, f"must be a number of seconds, got {type(value).__name__}")
            if not math.isfinite(value) or value <= 0:
                raise ConfigError(key, f"must be a finite positive number of seconds, got {value}")
        if not LEASE_TTL_MIN <= self.lease_ttl <= LEASE_TTL_MAX:
            raise ConfigError(
                "lease_ttl",
                f"must be between {LEASE_TTL_MIN:g} and {LEASE_TTL_MAX:g} seconds, "
                f"got {self.lease_ttl:g}",
            )
        if self.renew_interval < RENEW_INTERVAL_MIN:
            raise ConfigError(
                "renew_interval",
                f"must be at least {RENEW_INTERVAL_MIN:g} seconds, got {self.renew_interval:g}",
            )
        if not self.lease_ttl > self.renew_deadline:
            raise ConfigError(
                "renew_deadline",
                f"must be less than lease_ttl ({self.renew_deadline} s >= {self.lease_ttl} s): "
                "the leader must give up before its lease can expire on the server",
            )
        if not self.renew_deadline > RENEW_SLACK * self.renew_interval:
            raise ConfigError(
                "renew_interval",
                f"must be less than renew_deadline / {RENEW_SLACK:g} ({self.renew_interval:g} s "
                f"vs renew_deadline {self.renew_deadline:g} s): a renewal must be able to come "
                "late and still fit before the deadline",
            )

    @property
    def op_timeout(self) -> float:
        """Seconds one backend call may take: half the window between interval and deadline."""
        gap = (self.renew_deadline - self.renew_interval) / 2
        return max(OP_TIMEOUT_MIN, min(OP_TIMEOUT_MAX, gap))
