"""The PostgreSQL backend's façade: one object with every role, each kept by its module."""

from __future__ import annotations

from scheduler.backends.base import DEFAULT_OP_TIMEOUT
from scheduler.backends.composite import RoleBackend
from scheduler.backends.postgresql.database import Database
from scheduler.backends.postgresql.lease import PostgresLeases, TokenFloors
from scheduler.backends.postgresql.ledger import PostgresLedger
from scheduler.backends.postgresql.preflight import preflight
from scheduler.backends.postgresql.presence import PostgresControls, PostgresPresence
from scheduler.backends.postgresql.url import PostgresTarget, parse_url
from scheduler.backends.rules import check_op_timeout
from scheduler.backends.urls import BackendURL
from scheduler.clock import SYSTEM_CLOCK, Clock


class PostgresBackend(RoleBackend):
    """A :class:`~scheduler.backends.base.Backend` on a PostgreSQL server (or PgBouncer in
    front of one). No connection is made until the first call.

    It has no :class:`~scheduler.backends.base.LeaseNotifier`: a lease is lost by expiry on
    the server's clock (which the holder's local deadline foresees) or by a takeover after
    it; ``LISTEN`` serves the followers' handover only.

    Args:
        target: the parsed URL.
        op_timeout: seconds any call may take (see :mod:`.database`).
        clock: the clock local deadlines and ``since`` stamps are read from.
        create: whether a missing schema may be created (replicas; read and operator
            commands pass ``False``), if the URL's ``create_schema`` allows it too.
    """

    def __init__(
        self,
        target: PostgresTarget,
        *,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        clock: Clock = SYSTEM_CLOCK,
        create: bool = True,
    ) -> None:
        check_op_timeout(op_timeout)
        self.url = target.shown
        self.target = target
        self._db = Database(target, op_timeout, create=create)
        floors = TokenFloors()
        self._leases = PostgresLeases(self._db, clock, floors)
        self._control_table = PostgresControls(self._db)
        super().__init__(
            leases=self._leases,
            runs=PostgresLedger(self._db, floors),
            presence=PostgresPresence(self._db),
            controls=self._control_table,
        )

    @classmethod
    def from_url(
        cls,
        url: str | BackendURL,
        *,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        clock: Clock = SYSTEM_CLOCK,
        create: bool = True,
    ) -> PostgresBackend:
        """Open ``postgresql://[user[:password]@]host[:port][,...]/dbname[?options]``.

        Raises:
            ConfigError: the URL is malformed (key ``backend``).
        """
        return cls(parse_url(url), op_timeout=op_timeout, clock=clock, create=create)

    def __repr__(self) -> str:
        return f"PostgresBackend({self.url!r})"

    def check(self) -> None:
        """Connect with our credentials, check the schema's version, run ``SELECT 1``."""
        with self._db.work.call() as conn:
            conn.execute("SELECT 1")

    def preflight(self, name: str) -> None:
        """See :func:`~.preflight.preflight`."""
        preflight(self._db, name)

    def close(self) -> None:
        """Close every connection; leases are left to expire."""
        self._leases.close()
        self._db.close()


__all__ = ["PostgresBackend"]
