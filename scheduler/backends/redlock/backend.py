"""The Redlock backend's façade: one object with every role, each kept by its own module.

**Pools.** Each primary has the Redis backend's two connection pools (the lease's, of
:data:`~.primaries.LEASE_CONNECTIONS`, and a shared one); the fan-out to the primaries runs
on two bounded thread pools owned by the backend, never a thread per call: the lease's
(:data:`LEASE_WORKERS_PER_PRIMARY` threads per primary: the elector's acquire, renew and
release, and a release at shutdown) and the shared one (:data:`WORKERS_PER_PRIMARY` per
primary: claims, starts, outcomes, reads, presence, controls). A primary that does not
answer holds a thread of each call for up to ``op_timeout`` (its socket's bound); the
call itself stops waiting for it sooner (:mod:`.lease`, :mod:`.quorum`).
"""

from __future__ import annotations

from collections.abc import Callable

from scheduler.backends.composite import RoleBackend
from scheduler.backends.floors import TokenFloors
from scheduler.backends.redis.preflight import preflight as redis_preflight
from scheduler.backends.redlock.controls import RedlockControls
from scheduler.backends.redlock.lease import RedlockLeases
from scheduler.backends.redlock.ledger import RedlockLedger
from scheduler.backends.redlock.presence import RedlockPresence
from scheduler.backends.redlock.primaries import Primary, open_primaries
from scheduler.backends.redlock.quorum import Answers, Fanout
from scheduler.backends.redlock.url import parse_url
from scheduler.backends.urls import BackendURL
from scheduler.clock import Clock
from scheduler.errors import BackendPermanentError

#: Connections of each primary's shared pool when the caller does not say: the Redis
#: backend's 16 spread over a few primaries (a call takes one per primary).
MAX_CONNECTIONS = 8
#: Threads of the lease's fan-out pool per primary (one acquire/renew and one release).
LEASE_WORKERS_PER_PRIMARY = 2
#: Threads of the shared fan-out pool per primary: four calls on every primary at once
#: (a claim batch, a start batch, outcomes, a read); more wait in the pool's queue.
WORKERS_PER_PRIMARY = 4


class RedlockBackend(RoleBackend):
    """Leases and run records on a majority of 3 or 5 independent Redis primaries.

    Open it with :meth:`from_url`. Safe to share between threads, except that
    :meth:`wait_for_change` must be called from one thread only. No
    :class:`~scheduler.backends.base.LeaseNotifier`: loss shows at the next renewal.

    Args:
        primaries: the group's primaries (:func:`~.primaries.open_primaries`).
        url: the redacted group URL, used in every error message.
        clock: the clock validity, deadlines and ``since`` stamps are read from.
        op_timeout: the bound of one call on one primary.
        floors: the token floors the primaries' role objects observe into.
    """

    def __init__(
        self,
        primaries: tuple[Primary, ...],
        url: str,
        clock: Clock,
        op_timeout: float,
        floors: TokenFloors,
    ) -> None:
        self.url = url
        self._primaries = primaries
        self.quorum = len(primaries) // 2 + 1
        labels = [p.label for p in primaries]
        n = len(primaries)
        self._lease_pool = Fanout(labels, LEASE_WORKERS_PER_PRIMARY * n, "baton-redlock-lease")
        self._pool = Fanout(labels, WORKERS_PER_PRIMARY * n, "baton-redlock")
        self._op_timeout = op_timeout
        self._leases = RedlockLeases(primaries, self._lease_pool, url, clock, floors, op_timeout)
        super().__init__(
            leases=self._leases,
            runs=RedlockLedger(primaries, self._pool, url, op_timeout),
            presence=RedlockPresence(primaries, self._pool, url, op_timeout),
            controls=RedlockControls(primaries, self._pool, url, op_timeout, clock),
        )

    @classmethod
    def from_url(
        cls,
        url: str | BackendURL,
        *,
        op_timeout: float,
        clock: Clock,
        max_connections: int = MAX_CONNECTIONS,
    ) -> RedlockBackend:
        """Open ``redlock://[[user]:password@]h1:p1,h2:p2,h3:p3[/db]`` (3 or 5 primaries)
        or ``rediss+redlock://...`` (TLS). No connection is made until the first call.

        Raises:
            ConfigError: the URL is malformed, names 1, an even number, 7 or more
                primaries, a primary twice, or an option not allowed (key ``backend``).
        """
        target = parse_url(url)
        floors = TokenFloors()
        primaries = open_primaries(target, op_timeout, clock, floors, max_connections)
        return cls(primaries, target.shown, clock, op_timeout, floors)

    def __repr__(self) -> str:
        return f"RedlockBackend({self.url!r})"

    def check(self) -> None:
        """PING every primary; a majority must answer (a permanent refusal is raised)."""
        self._on_each(lambda p: p.run_ping(), "a check", self._op_timeout)

    def preflight(self, name: str) -> None:
        """The Redis preflight (:func:`scheduler.backends.redis.preflight.preflight`) on every
        primary, plus the Redlock scripts loaded; a majority must pass, and a permanent
        refusal on any primary is raised."""

        def one(primary: Primary) -> None:
            redis_preflight(primary.client, primary.scripts, primary.url, name)
            primary.load_lock_scripts()

        # The preflight is some thirty calls on each primary, each bounded by op_timeout.
        self._on_each(one, "the preflight", self._op_timeout * 8, every_refusal=True)

    def _on_each(
        self,
        call: Callable[[Primary], object],
        what: str,
        timeout: float,
        every_refusal: bool = False,
    ) -> None:
        answers: Answers[object] = self._pool.each(
            [lambda p=p: call(p) for p in self._primaries],  # type: ignore[misc]
            timeout,
        )
        answers.unexpected()
        if every_refusal:
            for value in answers.values:
                if isinstance(value, BackendPermanentError):
                    raise value
        if len(answers.ok()) < self.quorum:
            raise answers.failure(self.url, what, self.quorum)

    def close(self) -> None:
        """Stop the fan-out pools, close every primary's connections; leases expire."""
        self._leases.close()
        self._lease_pool.close()
        self._pool.close()
        for primary in self._primaries:
            primary.close()


__all__ = ["MAX_CONNECTIONS", "RedlockBackend"]
