"""The ZooKeeper backend: Apache Curator's LeaderLatch on kazoo, claims in transactions.

One recipe a module, as in Curator and client-go's ``resourcelock``:

* :mod:`~scheduler.backends.zookeeper.backend`: :class:`ZooKeeperBackend`, the façade
  implementing the backend contract by delegating to the recipes below;
* :mod:`~.settings` (the ``zookeeper:`` config section), :mod:`~.url` (the URL),
  :mod:`~.paths` (the node layout);
* :mod:`~.session`: the kazoo session, its connection states and call deadlines;
* :mod:`~.latch`: the leader latch's state machine (no I/O); :mod:`~.joining` (protected
  creates), :mod:`~.watcher` (watches and state changes), :mod:`~.lease` (acquire, renew,
  release, watch) and :mod:`~.observer` (read, wait for a change) drive it;
* :mod:`~.ledger` (claims and history), :mod:`~.batches` (the same in batches: reads in
  waves, one ``multi`` per chunk) planned by :mod:`~.plans` (no I/O),
  :mod:`~.presence`, :mod:`~.controls`, :mod:`~.preflight` (credentials and ACLs).

**Latch.** :meth:`ZooKeeperBackend.try_acquire` creates the holder's latch node once and
keeps it: the holder is queued. The node with the lowest sequence number leads; once lowest it
stays lowest until it is deleted, because sequence numbers only grow and deleted ephemeral
nodes never come back. A follower watches only its predecessor (no herd effect), so
:meth:`~ZooKeeperBackend.wait_for_change` returns as soon as that node is deleted. The leader
watches its own node: deletion or rewriting by anyone ends the lease at once through
:meth:`~ZooKeeperBackend.watch`. Node names carry a fresh GUID (Curator's "protected" mode), so
a create whose reply was lost is found and adopted by the next attempt instead of lingering
as an orphan ahead of everyone. A lease of this backend belongs to this instance's session.

**Fencing token: the czxid of the leader's latch node**, the zxid of the transaction that
created it. zxids are issued by the ZooKeeper leader in one total order (epoch in the high 32
bits, a counter in the low ones; every new ZooKeeper leader starts a higher epoch), are
persisted in the transaction log, and a later transaction always has a larger one. A node
leading after node A was either queued behind A while A led (so it was created after A: a
larger sequence number comes from a later transaction) or created after A was already
lowest; either way its czxid is larger. Only a ZooKeeper that lost its transaction log could
go back, which loses every other guarantee too.

**Connection states** (kazoo's vocabulary, Curator's policy):

* ``CONNECTED``: requests are answered; a leader may claim (the claim transaction itself
  re-checks the latch node).
* ``SUSPENDED``: the connection dropped; the session, and our node, may still be alive on the
  server or may expire there at any moment. No claim is sent. With ``on_suspended="lose"``
  (the default, Curator's standard policy) every lease is lost at once (``on_lost``, and
  :class:`~scheduler.errors.LeaseLost` from renew and claim); its node is deleted as soon as
  the connection is back, so the next replica in line takes over, and the holder re-enters
  the latch at the end of the queue. With ``on_suspended="wait"`` renewals fail with
  :class:`~scheduler.errors.BackendUnavailable` and the elector keeps leading until its
  renew deadline, which the timing rules put before the session can expire.
* ``RECONNECTED`` (``CONNECTED`` with the same session): the node may have survived (a
  ZooKeeper server restart) or been deleted meanwhile; each surviving lease's node is read
  again (and its watch re-armed) before it may fire: a missing node loses the lease, and every
  claim transaction checks the node anyway.
* ``LOST``: the session expired (or the backend was closed): every node of it is gone, every
  lease is lost, and the next :meth:`~ZooKeeperBackend.try_acquire` re-enters the latch with
  the new session kazoo opens.

**Lease TTL.** A latch node lives as long as the session, so ``renew`` only confirms (one
read) that the session is connected and the node still exists, and moves the local deadline.
The lease's local deadline must end before the server can expire the session, so the TTL is
capped at the session timeout ZooKeeper negotiated (servers clamp it to their
``minSessionTimeout``/``maxSessionTimeout``); :func:`check_lease_timings` refuses a
configured session timeout shorter than ``lease_ttl``.

**Bounded calls.** A call has one deadline for its session and its answers: ``op_timeout``
after it begins, or ``connection_timeout`` (default 2 s) when that is longer and a new
session must be established (the first one, or a replacement after expiry). So a read
command (``op_timeout`` 2 s) gives up on an unreachable ensemble after 2 s. Nothing is
retried inside a call beyond re-reading a latch or a run node that changed under it (at most
three reads). kazoo keeps reconnecting in the background, which is the session layer's job,
not a retried call; its own log lines (``Connection dropped`` at every attempt) are kept
below error level by :mod:`scheduler.ops.logs`, as Baton logs the states itself.

Claims, start, finish and unclaim are described in :mod:`~.ledger`; ACLs and the preflight
in :mod:`~.preflight`; the node layout in :mod:`~.paths`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scheduler.backends.zookeeper.settings import (
    DEFAULT_CONNECTION_TIMEOUT,
    DEFAULT_SESSION_TIMEOUT,
    ON_SUSPENDED,
    OnSuspended,
    ZooKeeperOptions,
    ZooKeeperSettings,
    check_lease_timings,
)
from scheduler.backends.zookeeper.url import (
    DEFAULT_CHROOT,
    DEFAULT_PORT,
    ZooKeeperTarget,
    parse_url,
)

if TYPE_CHECKING:
    from scheduler.backends.zookeeper.backend import ZooKeeperBackend


def __getattr__(name: str) -> Any:
    # The backend, and kazoo with it, loads on first use: scheduler.ops.config imports this
    # package's settings, and a replica on another backend never needs kazoo.
    if name == "ZooKeeperBackend":
        from scheduler.backends.zookeeper.backend import ZooKeeperBackend

        return ZooKeeperBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_CHROOT",
    "DEFAULT_CONNECTION_TIMEOUT",
    "DEFAULT_PORT",
    "DEFAULT_SESSION_TIMEOUT",
    "ON_SUSPENDED",
    "OnSuspended",
    "ZooKeeperBackend",
    "ZooKeeperOptions",
    "ZooKeeperSettings",
    "ZooKeeperTarget",
    "check_lease_timings",
    "parse_url",
]
