"""The ZooKeeper backend: one session, and the recipes built on it behind one façade."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime

from scheduler.backends.base import StartAnswer
from scheduler.backends.urls import BackendURL
from scheduler.backends.zookeeper.batches import ZooKeeperBatches
from scheduler.backends.zookeeper.controls import ZooKeeperControls
from scheduler.backends.zookeeper.latch import LeaderLatch
from scheduler.backends.zookeeper.lease import LatchLeases
from scheduler.backends.zookeeper.ledger import ZooKeeperLedger
from scheduler.backends.zookeeper.observer import LatchObserver
from scheduler.backends.zookeeper.paths import Layout
from scheduler.backends.zookeeper.preflight import ZooKeeperPreflight
from scheduler.backends.zookeeper.presence import ZooKeeperPresence
from scheduler.backends.zookeeper.session import Session
from scheduler.backends.zookeeper.settings import ZooKeeperSettings
from scheduler.backends.zookeeper.url import ZooKeeperTarget, parse_url
from scheduler.backends.zookeeper.watcher import LatchWatcher
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import ConfigError
from scheduler.firing.runs import Retention, RunRecord
from scheduler.leadership.lease import Holder, Lease, LeaseRecord
from scheduler.leadership.members import Member


class ZooKeeperBackend:
    """Leader latch and run records in a ZooKeeper ensemble, through one kazoo session.

    Open it with :meth:`from_url`; no connection is made until the first call. Safe to share
    between threads. Leases are tied to this instance's session: :meth:`close` ends the
    session, which deletes its latch nodes at once. A
    :class:`~scheduler.backends.base.Backend` and a
    :class:`~scheduler.backends.base.LeaseNotifier`; each method is documented by the
    recipe it delegates to. The ledger's batch methods read in waves and write one
    ``multi`` per chunk (:mod:`.batches`).

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
        watcher = LatchWatcher(session, latch)
        leases = LatchLeases(session, layout, latch, watcher, clock)
        self._session = session
        self._leases = leases
        self._observer = LatchObserver(session, layout, latch, watcher)
        self._ledger = ZooKeeperLedger(session, layout, leases)
        self._batches = ZooKeeperBatches(session, layout, leases, self._ledger)
        self._presence = ZooKeeperPresence(session, layout)
        self._controls = ZooKeeperControls(session, layout)
        self._preflight = ZooKeeperPreflight(session, layout, target)

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

    # --- the lease: lease.py, observer.py ---------------------------------------------------

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        return self._leases.try_acquire(name, holder, ttl)

    def renew(self, lease: Lease) -> Lease:
        return self._leases.renew(lease)

    def release(self, lease: Lease) -> None:
        self._leases.release(lease)

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        self._leases.watch(lease, on_lost)

    def read(self, name: str) -> LeaseRecord | None:
        return self._observer.read(name)

    def wait_for_change(self, name: str, timeout: float) -> None:
        self._observer.wait_for_change(name, timeout)

    # --- the run ledger: ledger.py, batches.py -----------------------------------------------

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        return self._ledger.claim(lease, run, retention)

    def claim_many(
        self, lease: Lease, runs: Sequence[RunRecord], retention: Retention
    ) -> list[RunRecord | None]:
        return self._batches.claim_many(lease, runs, retention)

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        return self._ledger.start(lease, run)

    def start_many(self, lease: Lease, runs: Sequence[RunRecord]) -> list[StartAnswer]:
        return self._batches.start_many(lease, runs)

    def finish(self, name: str, run: RunRecord) -> None:
        self._ledger.finish(name, run)

    def finish_many(self, name: str, runs: Sequence[RunRecord]) -> None:
        self._batches.finish_many(name, runs)

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        return self._ledger.lookup(name, job, scheduled_time)

    def unclaim(self, name: str, run: RunRecord) -> bool:
        return self._ledger.unclaim(name, run)

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        return self._ledger.history(name, job, limit)

    def history_many(
        self, name: str, jobs: Iterable[str], limit: int
    ) -> dict[str, list[RunRecord]]:
        return self._batches.history_many(name, jobs, limit)

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        return self._ledger.claimed(name, job, since, until)

    # --- presence and controls: presence.py, controls.py --------------------------------------

    def announce(self, name: str, member: Member, ttl: float) -> None:
        self._presence.announce(name, member, ttl)

    def withdraw(self, name: str, replica_id: str) -> None:
        self._presence.withdraw(name, replica_id)

    def members(self, name: str) -> list[Member]:
        return self._presence.members(name)

    def set_control(self, name: str, key: str, value: str | None) -> None:
        self._controls.set_control(name, key, value)

    def controls(self, name: str) -> dict[str, str]:
        return self._controls.controls(name)

    # --- checks and the session: preflight.py, session.py -------------------------------------

    def check(self) -> None:
        self._preflight.check()

    def preflight(self, name: str) -> None:
        self._preflight.preflight(name)

    def close(self) -> None:
        """End the session (its latch nodes go at once) and stop kazoo's threads."""
        self._session.close()


__all__ = ["ZooKeeperBackend"]
