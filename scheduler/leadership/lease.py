"""Lease value objects: who holds it, with which fencing token, and until when (locally)."""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field
from datetime import datetime

# Redlock's allowance for clock-rate drift between this host and the server: 1% of the TTL
# plus 2 ms. The local deadline ends this much before the server can expire the lease.
DRIFT_FACTOR = 0.01
DRIFT_FLOOR = 0.002


def local_deadline(sent_at: float, ttl: float) -> float:
    """Monotonic instant until which a lease granted by a request sent at ``sent_at`` is ours.

    The server starts the TTL when it *receives* the request, which is after ``sent_at``;
    counting from the send time and subtracting the drift margin keeps the local deadline
    before the server-side expiry.

    Args:
        sent_at: monotonic seconds when the acquire or renew request was sent.
        ttl: lease time-to-live in seconds.
    """
    return sent_at + ttl - (ttl * DRIFT_FACTOR + DRIFT_FLOOR)


@dataclass(frozen=True, slots=True)
class Holder:
    """The identity a replica presents to the backend.

    ``id`` is unguessable (replica id plus 128 random bits) so that no other process, not even
    a second replica started with the same replica id, can renew or release our lease.
    It is distinct from the fencing token, which is public.
    """

    id: str
    replica_id: str
    host: str

    @classmethod
    def new(cls, replica_id: str, host: str | None = None) -> Holder:
        """A fresh holder identity for ``replica_id`` (new random part each call)."""
        return cls(
            id=f"{replica_id}:{secrets.token_hex(16)}",
            replica_id=replica_id,
            host=host or socket.gethostname(),
        )


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease held by this process, as returned by a backend's acquire or renew.

    Attributes:
        name: the election name (the ``cluster``).
        holder: who holds it.
        token: the fencing token, strictly increasing per acquisition.
        ttl: time-to-live in seconds granted by the last acquire/renew.
        sent_at: monotonic seconds when that acquire/renew request was sent.
        deadline: local monotonic deadline (see :func:`local_deadline`).
        handle: backend-specific data needed to act on the lease (e.g. a ZooKeeper node path).
    """

    name: str
    holder: Holder
    token: int
    ttl: float
    sent_at: float
    deadline: float
    handle: str = field(default="", compare=False)

    def renewed(self, sent_at: float, ttl: float | None = None) -> Lease:
        """The same lease with its deadline counted from a renewal sent at ``sent_at``."""
        new_ttl = self.ttl if ttl is None else ttl
        return Lease(
            name=self.name,
            holder=self.holder,
            token=self.token,
            ttl=new_ttl,
            sent_at=sent_at,
            deadline=local_deadline(sent_at, new_ttl),
            handle=self.handle,
        )


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """What an observer sees of the current lease (``baton leader``), without owning it.

    Attributes:
        name: the election name.
        replica_id: the holder's replica id.
        host: the holder's host name.
        token: the fencing token of the holder's acquisition.
        since: wall-clock time the holder acquired the lease (as the holder stamped it).
        ttl_left: seconds until the server expires the lease unless renewed; ``None`` when
            the backend has no TTL (a ZooKeeper latch lives as long as the session).
    """

    name: str
    replica_id: str
    host: str
    token: int
    since: datetime
    ttl_left: float | None
