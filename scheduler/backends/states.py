"""The words every backend and the elector share: why a lease is lost, why a claim is lost,
and what state a backend's connection is in (kazoo's ``states.py`` is the model).

Each is a :class:`~enum.StrEnum`, so a member compares equal to its string and prints as it:
code that compares reasons with strings, and logs that show them, read the same as before.
Metric labels take their values only from these enums, which keeps them a bounded set.
"""

from __future__ import annotations

from enum import StrEnum


class LossReason(StrEnum):
    """Why a term ended: the ``reason`` of :class:`~scheduler.errors.LeaseLost` and of the
    elector's loss events, and the ``reason`` label of the ``leadership_lost`` metric.

    A backend raises :class:`~scheduler.errors.LeaseLost` (and calls a
    :class:`~scheduler.backends.base.LeaseNotifier`'s ``on_lost``) only with the backend
    reasons; the elector ends a term for the elector reasons.
    """

    # -- lease stores with a TTL (SQLite, Redis) -----------------------------------------
    #: The lease's TTL ran out on the server (or, SQLite, its row is from another boot).
    EXPIRED = "expired"
    #: Another holder (or another acquisition of ours) holds the lease now.
    NOT_HOLDER = "not-holder"
    #: The lease is held by our holder id but under another token: a later acquisition.
    STALE_TOKEN = "stale-token"
    #: The lease was released: no lease is stored under the name any more.
    RELEASED = "released"

    # -- session stores (ZooKeeper) -------------------------------------------------------
    #: The connection dropped and the policy treats "cannot confirm" as "lost".
    CONNECTION_SUSPENDED = "connection-suspended"
    #: The session expired on the server: every ephemeral node of it is gone.
    SESSION_EXPIRED = "session-expired"
    #: The lease's node was deleted (by an operator, or found missing after a reconnect).
    NODE_DELETED = "node-deleted"
    #: The lease's node was rewritten by someone else.
    NODE_MODIFIED = "node-modified"

    # -- decided by the elector -----------------------------------------------------------
    #: The replica is shutting down and gave the lease up.
    SHUTDOWN = "shutdown"
    #: An operator asked this leader to step down (``baton resign``).
    RESIGNED = "resigned"
    #: No renewal succeeded before the renew deadline: the elector stops leading first.
    RENEW_DEADLINE = "renew_deadline"
    #: The backend refused an operation for good (credentials, ACL, schema).
    BACKEND_REFUSED = "backend_refused"

    @property
    def voluntary(self) -> bool:
        """Whether the replica chose to end the term (shutdown, resign): not a loss to react
        to (no ``exit_on_lost``)."""
        return self in (LossReason.SHUTDOWN, LossReason.RESIGNED)


class ClaimRefusal(StrEnum):
    """Why :meth:`~scheduler.backends.base.RunLedger.start` refused a claimed fire: the
    ``reason`` of :class:`~scheduler.errors.ClaimLost`."""

    #: No record of the fire: given back (unclaimed), or lost with the backend's data.
    GONE = "gone"
    #: The record was written by another claim attempt.
    OTHER_ATTEMPT = "other-attempt"
    #: The record is this attempt's but no longer ``claimed``: already started or finished.
    NOT_CLAIMED = "not-claimed"


class ConnectionState(StrEnum):
    """The state of a backend's connection, as its connection listeners see it.

    Values are kazoo's state names (``KazooState``), plus Curator's ``RECONNECTED``. When in
    doubt, "cannot confirm" means "lost": a state that cannot prove the lease is still ours
    is treated as one where it is not.
    """

    #: Requests are answered and the session (if any) is the one leases were taken in.
    #: Safe: everything; a leader may claim (each claim still re-checks the lease).
    CONNECTED = "CONNECTED"
    #: The connection dropped; the session, and what it holds, may be alive on the server or
    #: may expire there at any moment. Safe: nothing that needs the lease; no claim is sent.
    #: A leader either gives the term up now (the default policy) or keeps it only until its
    #: local renew deadline, which ends before the server can expire the session.
    SUSPENDED = "SUSPENDED"
    #: Connected again within the same session, after a suspension. What the session held
    #: may have survived or been deleted meanwhile. Safe: reads; a lease may fire again only
    #: after it was read back on the server (a missing one is lost).
    RECONNECTED = "RECONNECTED"
    #: The session is gone (expired on the server, or the backend was closed). Safe: only
    #: starting over; every lease of the session is lost and must be acquired anew.
    LOST = "LOST"


__all__ = ["ClaimRefusal", "ConnectionState", "LossReason"]
