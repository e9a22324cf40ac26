"""The ZooKeeper backend: one session, and the recipes built on it behind one façade."""

from __future__ import annotations

from collections.abc import Callable

from scheduler.backends.composite import RoleBackend
from scheduler.backends.urls import BackendURL
from scheduler.backends.zookeeper.batches import ZooKeeperBatches
from scheduler.backends.zookeeper.controls import ZooKeeperControls
from scheduler.backends.zookeeper.latch import LeaderLatch
from scheduler.backends.zookeeper.lease import LatchLeases
from scheduler.backends.zookeeper.paths import Layout
from scheduler.backends.zookeeper.preflight import ZooKeeperPreflight
from scheduler.backends.zookeeper.presence import ZooKeeperPresence
from scheduler.backends.zookeeper.session import Session
from scheduler.backends.zookeeper.settings import ZooKeeperSettings
from scheduler.backends.zookeeper.url import ZooKeeperTarget, parse_url
from scheduler.backends.zookeeper.watcher import LatchWatcher
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import ConfigError
from scheduler.leadership.lease import Lease


class ZooKeeperBackend(RoleBackend):
    """Leader latch and run records in a ZooKeeper ensemble, through one kazoo session.

    Open it with :meth:`from_url`; no connection is made until the first call. Safe to share
    between threads. Leases are tied to this instance's session: :meth:`close` ends the
    session, which deletes its latch nodes at once. A
    :class:`~scheduler.backends.base.Backend` and a
    :class:`~scheduler.backends.base.LeaseNotifier`; the role methods are forwarded
    (:class:`~scheduler.backends.composite.RoleBackend`) to the recipes, each documented
    there. The ledger's batch methods read in waves and write one ``multi`` per chunk
    (:mod:`.batches`).

    Args:
        target: the parsed URL.
        op_timeout: seconds each call may wait for the session and for its answers.
        clock: the clock lease deadlines and ``since`` stamps are read from.
        options: session and TLS settings (default: :class:`ZooKeeperSettings`).

    Raises:
        ConfigError: ``op_timeout`` is not positive, or the settings contradict each other.
    """

    def __init__(
        self,
        target: ZooKeeperTarget,
        *,
        op_timeout: float,
        clock: Clock = SYSTEM_CLOCK,
        options: ZooKeeperSettings | None = None,
    ) -> None:
        if not op_timeout > 0:
            raise ConfigError("backend", f"op_timeout must be positive, got {op_timeout!r}")
        self.url = target.shown
        self.options = options or ZooKeeperSettings()
        self.options.check()
        session = Session(target, self.options, op_timeout)
        layout = Layout(target.root)
        latch = LeaderLatch(self.options.on_suspended, session.notify)
        self._session = session
        self._leases = LatchLeases(session, layout, latch, LatchWatcher(session, latch), clock)
        self._preflight = ZooKeeperPreflight(session, layout, target)
        super().__init__(
            leases=self._leases,
            runs=ZooKeeperBatches(session, layout, self._leases),
            presence=ZooKeeperPresence(session, layout),
            controls=ZooKeeperControls(session, layout),
        )

    @classmethod
    def from_url(
        cls,
        url: str | BackendURL,
        *,
        op_timeout: float,
        clock: Clock = SYSTEM_CLOCK,
        options: ZooKeeperSettings | None = None,
    ) -> ZooKeeperBackend:
        """Open ``zookeeper://[user:password@]host:port[,host:port...]/chroot``.

        Args:
            url: the ensemble, optional digest credentials and the chroot (default
                ``/baton``).
            op_timeout: seconds each call may wait for the session and its answers.
            clock: the clock deadlines are computed from.
            options: session and TLS settings (default: :class:`ZooKeeperSettings`).

        Raises:
            ConfigError: the URL or an option is malformed.
        """
        return cls(parse_url(url), op_timeout=op_timeout, clock=clock, options=options)

    def __repr__(self) -> str:
        return f"ZooKeeperBackend({self.url!r})"

    @property
    def session_id(self) -> int | None:
        """The current session id while connected, else ``None`` (for logs and tooling)."""
        return self._session.connected_id

    @property
    def negotiated_session_timeout(self) -> float | None:
        """Seconds of session timeout the server granted at the last connect, if known."""
        return self._session.negotiated_timeout

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        """See :meth:`.LeaseNotifier.watch`: the latch's watches and session states."""
        self._leases.watch(lease, on_lost)

    # --- checks and the session: preflight.py, session.py -------------------------------------

    def check(self) -> None:
        """See :meth:`.ZooKeeperPreflight.check`."""
        self._preflight.check()

    def preflight(self, name: str) -> None:
        """See :meth:`.ZooKeeperPreflight.preflight`."""
        self._preflight.preflight(name)

    def close(self) -> None:
        """End the session (its latch nodes go at once) and stop kazoo's threads."""
        self._session.close()


__all__ = ["ZooKeeperBackend"]
