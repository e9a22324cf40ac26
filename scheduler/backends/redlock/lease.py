"""The lease store on a Redlock group: a lock on a majority, then a fencing token from it.

**Acquire** (two rounds over every primary, in parallel, each bounded by
:func:`node_timeout`):

1. ``LOCK_LUA`` on every primary: ``SET NX PX`` with the holder id, answered with the
   primary's token counter, its state (``same``, ``changed``, ``fresh``: see
   :mod:`.scripts`), its uptime and its clock. Fewer than a majority granting is
   contention (``None``; the locks taken are given back at once), unless primaries that
   did not answer could have made one (:class:`~scheduler.errors.BackendUnavailable`).
2. The **votes**: of the primaries that granted, those that did not restart since the
   last seal (state ``same``), and those that restarted — with persistence (``changed``)
   or empty (``fresh`` while another primary remembers the election) — but have been up
   for longer than the TTL plus a second (uptime has whole seconds). A primary restarted
   less than a TTL ago does not vote: it may have lost a lock someone still holds (Redlock's
   "delayed restart", enforced here rather than assumed). Fewer votes than a majority
   refuses the acquisition (locks given back, ``BackendUnavailable`` naming the primaries)
   until enough primaries answer that kept their data or have been up long enough. A
   restarted primary's lost claims are covered by the claim epoch the seal gives it (4.),
   its lost token by the other terms of the token (3.). A new election (every primary that
   answered ``fresh``) votes with all.
3. The token ``max(highest counter of the primaries that answered + 1, floor + 1,
   highest server clock in µs)`` (the floor: :class:`~scheduler.backends.floors.
   TokenFloors`; the µs clock as in the Redis backend, for the day every primary lost its
   data at once).
4. ``SEAL_LUA`` on every primary that answered: where the lock was granted and is still
   ours, the counter set to the token if greater and the info hash (the token every claim
   checks) written; on the others the counter (if greater) and the server's ``run_id``,
   so that every primary that answered remembers the election; a primary that restarted
   (state ``changed`` or ``fresh`` in an election others remember) also gets the claim
   epoch (:mod:`.scripts`). The lease is
   handed out only when a majority sealed **and** its validity is still positive: the
   local deadline, ``sent_at + TTL - drift`` with drift = 1 % of the TTL + 2 ms
   (:func:`~scheduler.leadership.lease.local_deadline`, the Redis documentation's
   factor), read on the injected clock after the seal. Otherwise the locks are given back
   and the answer is ``None``.

**Renew** runs the Redis backend's owner-checked ``RENEW_LUA`` on every primary; it
succeeds with a majority of ``ok`` within the validity, counted from this renewal's send
time, and otherwise raises :class:`~scheduler.errors.LeaseLost` (the most common reason
the primaries gave, ``expired`` when they did not answer: cannot confirm means lost).
**Release** runs ``RELEASE_LUA`` on every primary (each publishes ``released``).
**Read** shows the holder a majority of the primaries agree on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from redis.client import PubSub

from scheduler.backends.floors import TokenFloors
from scheduler.backends.redis.keys import channel, epoch_key, lease_keys, server_key
from scheduler.backends.redis.releases import ReleaseWaiter
from scheduler.backends.redis.scripts import CLAIM_ALLOWANCE_MS
from scheduler.backends.redlock.primaries import OnPrimaries, Primary
from scheduler.backends.redlock.quorum import Answers, Fanout, most_common
from scheduler.backends.rules import granted, ttl_ms
from scheduler.backends.states import LossReason
from scheduler.clock import Clock
from scheduler.errors import BackendUnavailable, LeaseLost
from scheduler.leadership.lease import Holder, Lease, LeaseRecord

#: The share of the TTL one primary may take to answer a lock, seal or renewal: Redlock
#: asks for a per-node timeout much smaller than the TTL, so that a dead primary costs
#: little of the validity. Default 10 %; more tolerates slower primaries and leaves less
#: validity after a slow one.
NODE_TIMEOUT_SHARE = 0.1
#: The least time, in seconds, a primary is given to answer a lease step (200 ms): below
#: that a loaded host's scheduling delays alone fail acquisitions of short TTLs (seen at
#: 100 ms on a 2-core test machine under a load average of 7).
MIN_NODE_TIMEOUT = 0.2
#: Milliseconds added to the TTL before a restarted primary votes again: its uptime is
#: reported in whole seconds.
UPTIME_SLACK_MS = 1000


def node_timeout(ttl: float, op_timeout: float) -> float:
    """Seconds one primary may take to answer a lease step for a lease of ``ttl`` seconds:
    ``min(op_timeout, max(MIN_NODE_TIMEOUT, ttl x NODE_TIMEOUT_SHARE))``."""
    return min(op_timeout, max(MIN_NODE_TIMEOUT, ttl * NODE_TIMEOUT_SHARE))


class RedlockLeases(OnPrimaries):
    """The :class:`~scheduler.backends.base.LeaseStore` role on a Redlock group.

    Safe to share between threads, except that :meth:`wait_for_change` must be called from
    one thread only.

    Args:
        primaries: the group's primaries.
        fanout: the lease's own pool (no burst of claims delays a renewal).
        url: the redacted group URL, for messages.
        clock: the clock validity, deadlines and ``since`` stamps are read from.
        floors: the token floors shared with the ledger.
        op_timeout: the bound of one call on one primary.
    """

    def __init__(
        self,
        primaries: Sequence[Primary],
        fanout: Fanout,
        url: str,
        clock: Clock,
        floors: TokenFloors,
        op_timeout: float,
    ) -> None:
        super().__init__(primaries, fanout, url, op_timeout)
        self._clock = clock
        self._floors = floors
        self._subscribed_to = 0
        self._releases = ReleaseWaiter(self._connect, self._next_primary)

    # -- acquire -------------------------------------------------------------------------

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Lock a majority, choose a token from it, seal it on a majority; see the module
        docstring for every step."""
        ttl_in_ms = ttl_ms(ttl)
        lease_key, info_key, token_key = lease_keys(name)
        since = self._clock.now().isoformat()
        bound = node_timeout(ttl, self._op_timeout)
        sent_at = self._clock.monotonic()
        locks: Answers[list[object]] = self._fanout.each(
            [
                (
                    lambda p=p: p.run(  # type: ignore[misc]
                        p.lock.lock,
                        [lease_key, info_key, token_key, server_key(name)],
                        [holder.id, ttl_in_ms],
                    )
                )
                for p in self._primaries
            ],
            bound,
        )
        locks.unexpected()
        answered = locks.ok()
        won = [(i, reply) for i, reply in answered if int(str(reply[0])) == 1]
        for _, reply in answered:
            self._floors.observe(name, int(str(reply[5])))
        if len(won) < self.quorum:
            self._unlock(name, holder, bound)
            if len(won) + len(locks.errors()) >= self.quorum:
                raise locks.failure(self._url, "an acquisition", self.quorum)
            return None
        fresh_election = all(str(reply[2]) == "fresh" for _, reply in answered)
        voters = [
            i
            for i, reply in won
            if fresh_election
            or str(reply[2]) == "same"
            or int(str(reply[3])) >= ttl_in_ms + UPTIME_SLACK_MS
        ]
        if len(voters) < self.quorum:
            self._unlock(name, holder, bound)
            raise BackendUnavailable(self._url, self._refusal(won, voters))
        token = max(
            max(int(str(reply[1])) for _, reply in answered) + 1,
            self._floors.floor(name) + 1,
            max(int(str(reply[4])) for _, reply in answered),
        )
        self._floors.observe(name, token)
        # A primary that restarted (with persistence or without) may have lost claims too.
        epochs = {
            i: "fresh" if fresh_election else ("" if str(reply[2]) == "same" else "lost")
            for i, reply in answered
        }
        granted_here = {i for i, _ in won}
        seal_keys = [lease_key, info_key, token_key, epoch_key(name), server_key(name)]
        seals: Answers[object] = self._fanout.each(
            [
                (
                    (
                        lambda p=p, i=i: p.run(  # type: ignore[misc]
                            p.lock.seal,
                            seal_keys,
                            [
                                holder.id,
                                str(token),
                                holder.replica_id,
                                holder.host,
                                since,
                                epochs[i],
                                CLAIM_ALLOWANCE_MS,
                                "1" if i in granted_here else "0",
                            ],
                        )
                    )
                    if i in epochs
                    else None
                )
                for i, p in enumerate(self._primaries)
            ],
            bound,
        )
        seals.unexpected()
        sealed = sum(1 for _, reply in seals.ok() if int(str(reply)) == 1)
        lease = granted(name, holder, token, ttl, sent_at)
        if sealed < self.quorum or self._clock.monotonic() >= lease.deadline:
            # Not handed out: the token was not written back to a majority in time, or the
            # validity is spent. The locks go back at once rather than block for the TTL.
            self._unlock(name, holder, bound, token)
            return None
        return lease

    def _refusal(self, won: list[tuple[int, list[object]]], voters: list[int]) -> str:
        empty = [
            self._primaries[i].label
            for i, reply in won
            if str(reply[2]) == "fresh" and i not in voters
        ]
        recent = [
            self._primaries[i].label
            for i, reply in won
            if str(reply[2]) == "changed" and i not in voters
        ]
        parts = []
        if empty:
            parts.append(f"restarted empty (lost its data): {', '.join(empty)}")
        if recent:
            parts.append(f"restarted with its data: {', '.join(recent)}")
        return (
            f"acquisition refused: only {len(voters)} of the {len(won)} primaries that "
            f"granted the lock may vote, and a majority ({self.quorum} of "
            f"{len(self._primaries)}) must: a primary restarted less than the TTL ago may "
            f"have lost a lock someone holds; {'; '.join(parts)}. It succeeds once a "
            "majority of primaries that did not restart answers, or the restarted ones have "
            "been up for longer than the TTL"
        )

    def _unlock(self, name: str, holder: Holder, bound: float, token: int | None = None) -> None:
        """Give back the (maybe unsealed) locks of ``holder``'s failed acquisition (sealed
        with ``token``, if it chose one); best effort, waiting up to ``bound`` seconds.
        Sent to every primary, not only to those that granted: a lock request that did
        not answer in time may still have landed, or land later."""
        lease_key, info_key, _ = lease_keys(name)
        given = "" if token is None else str(token)
        self._fanout.each(
            [
                (
                    lambda p=p: p.run(  # type: ignore[misc]
                        p.lock.unlock, [lease_key, info_key], [holder.id, channel(name), given]
                    )
                )
                for p in self._primaries
            ],
            bound,
        )

    # -- renew, release, read ----------------------------------------------------------

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` on every primary where it is still ours (owner-checked).

        Raises:
            LeaseLost: fewer than a majority renewed within the validity.
        """
        sent_at = self._clock.monotonic()
        renewals: Answers[Lease] = self._fanout.each(
            [lambda p=p: p.leases.renew(lease) for p in self._primaries],  # type: ignore[misc]
            node_timeout(lease.ttl, self._op_timeout),
            enough=lambda a: len(a.ok()) >= self.quorum,
        )
        renewals.unexpected()
        if len(renewals.ok()) >= self.quorum:
            renewed = lease.renewed(sent_at)
            if self._clock.monotonic() < renewed.deadline:
                return renewed
            raise LeaseLost(lease.name, LossReason.EXPIRED)
        reasons = [str(e.reason) for e in renewals.errors(LeaseLost)]  # type: ignore[attr-defined]
        raise LeaseLost(lease.name, LossReason(most_common(reasons, LossReason.EXPIRED)))

    def release(self, lease: Lease) -> None:
        """Delete ``lease`` on every primary where it is still ours; each wakes followers.

        Raises:
            BackendUnavailable: fewer than a majority answered (the rest expire by TTL).
        """
        released = self._fan_out(lambda p: p.leases.release(lease))
        released.unexpected()
        if len(released.ok()) < self.quorum:
            raise released.failure(self._url, "a release", self.quorum)

    def read(self, name: str) -> LeaseRecord | None:
        """The holder a majority of the primaries show, with the time until fewer than a
        majority hold it; ``None`` when no holder has a majority."""
        answered = self._on_majority(lambda p: p.leases.read(name), "reading the lease")
        groups: dict[tuple[str, int], list[LeaseRecord]] = defaultdict(list)
        for _, record in answered:
            # A lock not sealed yet (an acquisition between its two rounds) has no info
            # hash: no token, no replica. It is no lease yet.
            if record is not None and record.token > 0 and record.replica_id:
                groups[(record.replica_id, record.token)].append(record)
        for copies in groups.values():
            if len(copies) >= self.quorum:
                left = sorted(
                    (c.ttl_left if c.ttl_left is not None else float("inf") for c in copies),
                    reverse=True,
                )[self.quorum - 1]
                best = max(copies, key=lambda c: c.since)
                return LeaseRecord(
                    name=best.name,
                    replica_id=best.replica_id,
                    host=best.host,
                    token=best.token,
                    since=best.since,
                    ttl_left=None if left == float("inf") else left,
                )
        return None

    # -- waiting ---------------------------------------------------------------------------

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` s on one primary's events channel; return early on
        ``released`` (every primary publishes it). A primary that fails is left for the
        next one, and the wait runs out its time (a follower calls this in a loop).
        Real time is used, not the injected clock: this is a wait on a socket."""
        self._releases.wait_for_change(name, timeout)

    def close(self) -> None:
        """Close the pub/sub connection and wake a waiter."""
        self._releases.close()

    def _connect(self) -> PubSub:
        client = self._primaries[self._subscribed_to].client
        return client.pubsub()  # type: ignore[no-untyped-call, no-any-return]

    def _next_primary(self) -> None:
        self._subscribed_to = (self._subscribed_to + 1) % len(self._primaries)


__all__ = ["MIN_NODE_TIMEOUT", "NODE_TIMEOUT_SHARE", "RedlockLeases", "node_timeout"]
