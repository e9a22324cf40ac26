"""The primaries of a Redlock group, each with the Redis backend's role objects on it.

A primary of a Redlock group keeps exactly what one Redis primary keeps (the keys of
:mod:`scheduler.backends.redis.keys`), so each role's per-primary step is the Redis
backend's own object (:class:`~scheduler.backends.redis.lease.RedisLeases`,
:class:`~scheduler.backends.redis.ledger.RedisLedger`, ...) on that primary's clients,
without replication acknowledgements (a Redlock primary has no replicas to wait for). The
Redlock modules fan each step out to every primary and count the answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import redis as redis_lib
from redis.commands.core import Script

from scheduler.backends.floors import TokenFloors
from scheduler.backends.redis.acks import Acks
from scheduler.backends.redis.controls import RedisControls
from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.lease import RedisLeases
from scheduler.backends.redis.ledger import RedisLedger
from scheduler.backends.redis.presence import RedisPresence
from scheduler.backends.redis.scripts import Scripts
from scheduler.backends.redis.url import connect
from scheduler.backends.redlock.quorum import Answers, Fanout
from scheduler.backends.redlock.scripts import LockScripts
from scheduler.backends.redlock.url import RedlockTarget
from scheduler.clock import Clock

#: Connections of each primary's lease pool (acquire, renew, release: see
#: :mod:`scheduler.backends.redis.backend`).
LEASE_CONNECTIONS = 2

_T = TypeVar("_T")


@dataclass(frozen=True)
class Primary:
    """One primary: its clients and the Redis backend's role objects on them.

    Attributes:
        label: ``host:port``, for messages.
        url: the redacted group URL and ``label``, in this primary's errors.
        client: the shared pool's client (ledger, presence, controls, reads).
        lease_client: the lease pool's client (lock, seal, renew, release).
        scripts: the Redis scripts registered with ``client``.
        lock: the Redlock scripts registered with ``lease_client``.
        leases: the lease role on this primary (renew, release, read).
        ledger: the run ledger on this primary.
        presence: presence on this primary.
        controls: controls on this primary.
    """

    label: str
    url: str
    client: redis_lib.Redis
    lease_client: redis_lib.Redis
    scripts: Scripts
    lock: LockScripts
    leases: RedisLeases
    ledger: RedisLedger
    presence: RedisPresence
    controls: RedisControls

    def run(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` on the lease pool, redis-py's errors made Baton's."""
        with translate_errors(self.url):
            return script(keys=keys, args=args)

    def run_ping(self) -> None:
        """PING with our credentials."""
        with translate_errors(self.url):
            self.client.ping()

    def load_lock_scripts(self) -> None:
        """Load the Redlock scripts (a restarted primary has none; preflight)."""
        with translate_errors(self.url):
            for script in self.lock.all():
                self.lease_client.script_load(script.script)

    def close(self) -> None:
        """Close this primary's pub/sub connection and both pools."""
        self.leases.close()
        for client in (self.client, self.lease_client):
            with suppress(redis_lib.RedisError, OSError):
                client.close()


def open_primaries(
    target: RedlockTarget,
    op_timeout: float,
    clock: Clock,
    floors: TokenFloors,
    max_connections: int,
) -> tuple[Primary, ...]:
    """A :class:`Primary` per primary of ``target``; nothing connects until the first call."""
    primaries: list[Primary] = []
    for node in target.primaries:
        label = f"{node.host}:{node.port}"
        url = f"{target.shown} [{label}]"
        client = connect(node, op_timeout, max_connections)
        lease_client = connect(node, op_timeout, LEASE_CONNECTIONS)
        scripts = Scripts.register(client)
        lease_scripts = Scripts.register(lease_client)
        acks = Acks(0, url, op_timeout)
        primaries.append(
            Primary(
                label=label,
                url=url,
                client=client,
                lease_client=lease_client,
                scripts=scripts,
                lock=LockScripts.register(lease_client),
                leases=RedisLeases(
                    lease_client, lease_scripts, client, scripts, url, clock, floors, acks
                ),
                ledger=RedisLedger(client, scripts, url, floors, acks),
                presence=RedisPresence(client, scripts, url),
                controls=RedisControls(client, url),
            )
        )
    return tuple(primaries)


class OnPrimaries:
    """The base of a role spread over a group's primaries: one call fanned out to each,
    the answers counted against a majority.

    Args:
        primaries: the group's primaries.
        fanout: the pool the calls run on.
        url: the redacted group URL, for messages.
        op_timeout: the bound of one call on one primary.
    """

    def __init__(
        self, primaries: Sequence[Primary], fanout: Fanout, url: str, op_timeout: float
    ) -> None:
        self._primaries = tuple(primaries)
        self._fanout = fanout
        self._url = url
        self._op_timeout = op_timeout
        self.quorum = len(self._primaries) // 2 + 1

    def _fan_out(
        self,
        call: Callable[[Primary], _T],
        enough: Callable[[Answers[_T]], bool] | None = None,
    ) -> Answers[_T]:
        """``call`` on every primary at once, each bounded by ``op_timeout``."""
        return self._fanout.each(
            [lambda p=p: call(p) for p in self._primaries],  # type: ignore[misc]
            self._op_timeout,
            enough,
        )

    def _on_majority(self, call: Callable[[Primary], _T], what: str) -> list[tuple[int, _T]]:
        """The answers of ``call`` on every primary, by primary index.

        Raises:
            BackendError: fewer than a majority answered (``what`` names the step).
        """
        answers = self._fan_out(call)
        answered = answers.ok()
        if len(answered) < self.quorum:
            raise answers.failure(self._url, what, self.quorum)
        return answered


__all__ = ["LEASE_CONNECTIONS", "OnPrimaries", "Primary", "open_primaries"]
