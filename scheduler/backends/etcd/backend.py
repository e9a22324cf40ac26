"""The etcd backend's façade: one object with every role, each kept by its module."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from contextlib import suppress

from scheduler.backends.base import DEFAULT_OP_TIMEOUT
from scheduler.backends.composite import RoleBackend
from scheduler.backends.etcd.gateway import Gateway, b64, create_is, put
from scheduler.backends.etcd.keys import Keys
from scheduler.backends.etcd.lease import EtcdLeases
from scheduler.backends.etcd.ledger import EtcdLedger
from scheduler.backends.etcd.presence import EtcdControls, EtcdPresence
from scheduler.backends.etcd.url import EtcdTarget, parse_url
from scheduler.backends.floors import TokenFloors
from scheduler.backends.rules import check_op_timeout
from scheduler.backends.urls import BackendURL
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import BackendError, BackendPermanentError, ConfigError
from scheduler.leadership.lease import Lease


class EtcdBackend(RoleBackend):
    """A :class:`~scheduler.backends.base.Backend` on an etcd cluster (v3 API through its
    HTTP/JSON gateway). No connection is made until the first call.

    It is a :class:`~scheduler.backends.base.LeaseNotifier`: the holder watches its leader
    key, so a deletion (an expiry, a foreign delete) or a rewrite ends the term at once,
    before the next renewal would have found it.

    Args:
        target: the parsed URL.
        op_timeout: seconds any call may take (see :mod:`.gateway`).
        clock: the clock local deadlines and ``since`` stamps are read from.
    """

    def __init__(
        self,
        target: EtcdTarget,
        *,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        check_op_timeout(op_timeout)
        self.url = target.shown
        self.target = target
        try:
            self._gw = Gateway(target, op_timeout)
        except OSError as exc:  # unreadable TLS files
            raise ConfigError("backend", f"{target.shown}: cannot load TLS files: {exc}") from None
        self._keys = Keys(target.prefix)
        floors = TokenFloors()
        self._leases = EtcdLeases(self._gw, self._keys, clock, floors)
        super().__init__(
            leases=self._leases,
            runs=EtcdLedger(self._gw, self._keys, floors),
            presence=EtcdPresence(self._gw, self._keys),
            controls=EtcdControls(self._gw, self._keys),
        )

    @classmethod
    def from_url(
        cls,
        url: str | BackendURL,
        *,
        op_timeout: float = DEFAULT_OP_TIMEOUT,
        clock: Clock = SYSTEM_CLOCK,
    ) -> EtcdBackend:
        """Open ``etcd://[user:password@]host[:port][,...][/prefix][?options]``.

        Raises:
            ConfigError: the URL is malformed (key ``backend``).
        """
        return cls(parse_url(url), op_timeout=op_timeout, clock=clock)

    def __repr__(self) -> str:
        return f"EtcdBackend({self.url!r})"

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        """See :meth:`.EtcdLeases.watch`."""
        self._leases.watch(lease, on_lost)

    def check(self) -> None:
        """Authenticate (if the URL has a user) and read one key of the prefix."""
        self._gw.range(self._keys.prefix + "/", prefix=True, limit="1", keys_only=True)

    def preflight(self, name: str) -> None:
        """Exercise every kind of call a replica makes, on a probe key of its own: a read of
        the cluster's keys, a lease grant, a guarded transaction putting the probe under the
        lease, its deletion, the lease's revocation.

        Raises:
            BackendUnavailable: no answer in time.
            BackendPermanentError: credentials refused, or the role lacks ``readwrite`` on
                the prefix.
        """
        self._gw.range(self._keys.cluster(name), prefix=True, limit="1", keys_only=True)
        probe = self._keys.probe(name, secrets.token_hex(8))
        lease_id = self._gw.grant(5)
        try:
            answer = self._gw.txn([create_is(probe, 0)], [put(probe, "", lease_id)])
            self._gw.call("kv/deleterange", {"key": b64(probe)})
            if not answer["succeeded"]:
                raise BackendPermanentError(
                    self.url, f"the preflight's probe key {probe} was in use"
                )
        finally:
            with suppress(BackendError):
                self._gw.revoke(lease_id)

    def close(self) -> None:
        """Wake any waiter and close every connection; leases are left to expire."""
        self._leases.close()
        self._gw.close()


__all__ = ["EtcdBackend"]
