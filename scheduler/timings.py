"""Lease timings, validated together: lease_ttl > renew_deadline > renew_interval."""

from __future__ import annotations

from dataclasses import dataclass

from scheduler.errors import ConfigError


@dataclass(frozen=True, slots=True)
class LeaseTimings:
    """How long a lease lasts and how the leader keeps it. All values in seconds.

    Attributes:
        lease_ttl: how long the backend keeps a lease without renewal (default 10). This is
            the longest a crashed leader blocks the cluster: shorter means faster failover
            after ``kill -9`` but more renewal traffic and less tolerance of slow backends.
        renew_interval: how often the leader renews (default ``lease_ttl / 3``). Shorter
            means more attempts before the deadline, at more traffic.
        renew_deadline: how long the leader keeps leading without a successful renewal
            before it gives up locally (default ``2 * lease_ttl / 3``). The gap to
            ``lease_ttl`` is the time running jobs get to notice ``ctx.lost`` before another
            replica can take over.
        op_timeout: the bound on any single backend call the elector makes, derived so that
            at least two attempts fit between ``renew_interval`` and ``renew_deadline``.
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
            if not value > 0:
                raise ConfigError(key, f"must be a positive number of seconds, got {value}")
        if not self.lease_ttl > self.renew_deadline:
            raise ConfigError(
                "renew_deadline",
                f"must be less than lease_ttl ({self.renew_deadline} s >= {self.lease_ttl} s): "
                "the leader must give up before its lease can expire on the server",
            )
        if not self.renew_deadline > self.renew_interval:
            raise ConfigError(
                "renew_interval",
                f"must be less than renew_deadline ({self.renew_interval} s >= "
                f"{self.renew_deadline} s): at least one renewal must fit before the deadline",
            )

    @property
    def op_timeout(self) -> float:
        """Seconds one backend call may take: half the window between interval and deadline."""
        return max(0.05, min(2.0, (self.renew_deadline - self.renew_interval) / 2))
