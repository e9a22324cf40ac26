"""The lease store on etcd, the way ``client/v3/concurrency`` elects: an etcd lease kept
alive by its holder, a leader key created under it in a transaction guarded by
``CreateRevision == 0``, and **the leader key's create revision as the fencing token**.

**Token.** etcd's revision is one counter for the whole keyspace, raised by every write
and replicated by Raft before it is answered, so a later leader key always has a larger
create revision than an earlier one, whoever wrote it, on whichever member. It is what
Jepsen (etcd 3.4.3) and the etcd maintainers advise using as a fencing token, since an
etcd lock alone cannot guarantee mutual exclusion. A restore from a snapshot could take
the revision back: the token floor (:mod:`~scheduler.backends.floors`) then refuses an
acquisition whose revision is not above a token this process saw (transient: each attempt
writes, so the revision climbs past the floor).

**Steps** (each one call of the gateway, see :mod:`.gateway`):

* ``try_acquire``: grant an etcd lease of ``ceil(ttl)`` seconds; one txn: if the leader
  key's create revision is 0, put the holder key and the info key under the lease (else
  read the holder's token, for the floor). Contention revokes the new lease (a follower
  tries after its watch saw the key go, so it rarely meets contention).
* ``renew``: keepalive the etcd lease (an answer without a TTL is a lost lease), then read
  the leader key: it must still be ours (create revision = token, value = holder id, our
  lease). A leader key deleted by someone else while the lease lives is a loss too
  (``node-deleted``).
* ``release``: one txn deleting both keys if the leader key is ours (the etcd lease, now
  keyless, expires on its own).
* ``wait_for_change``: read the leader key, then *watch* it from the next revision for its
  deletion (a release, an expiry, a foreign delete): no polling, a graceful handover wakes
  the followers at once.
* ``watch`` (a :class:`~scheduler.backends.base.LeaseNotifier`): the holder watches its own
  leader key from the revision after its creation; a deletion or a rewrite ends the term at
  once instead of at the next renewal.

**TTL.** etcd counts lease TTLs in whole seconds and raises any TTL to its minimum
(``1.5 x election-timeout``, 2 s with the defaults): the etcd lease is granted for
``ceil(ttl)`` seconds, so it never ends before the local deadline, which still counts the
TTL Baton asked for from the monotonic clock. A leader change inside etcd refreshes every
lease to its full TTL: the server may keep a crashed holder's key a little longer, but a
holder still gives up by its own deadline. ``lease_ttl`` below :data:`~.ttl.ETCD_MIN_TTL` is
refused by the configuration (see :func:`~.ttl.check_lease_ttl`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime
from typing import Any

import httpx

from scheduler.backends.etcd.gateway import (
    EtcdGatewayError,
    Gateway,
    b64,
    create_is,
    delete,
    get,
    put,
    range_request,
    unb64,
    value_is,
)
from scheduler.backends.etcd.keys import Keys
from scheduler.backends.etcd.ttl import lease_seconds
from scheduler.backends.floors import TokenFloors
from scheduler.backends.rules import granted
from scheduler.backends.runs import from_fire_key
from scheduler.backends.states import LossReason
from scheduler.clock import Clock
from scheduler.errors import BackendError, BackendUnavailable, LeaseLost
from scheduler.leadership.lease import Holder, Lease, LeaseRecord

#: Seconds one watch request waits for news before it is opened again (so that ``close``
#: and the caller's timeout are honoured without cutting a stream from another thread).
WATCH_SLICE = 1.0


def lease_id_of(lease: Lease) -> int:
    """The etcd lease id a :class:`Lease` carries in its handle (0: none)."""
    try:
        return int(lease.handle)
    except ValueError:
        return 0


def holder_compares(keys: Keys, lease: Lease) -> list[dict[str, Any]]:
    """The compares that hold while ``lease`` is held: the leader key exists with the
    token as its create revision and the holder's id as its value."""
    key = keys.holder(lease.name)
    return [create_is(key, lease.token), value_is(key, lease.holder.id)]


def lost_reason(kvs: list[dict[str, Any]], lease: Lease) -> LossReason:
    """Why ``lease`` is not held, from a read of its leader key (``kvs``)."""
    if not kvs:
        return LossReason.EXPIRED
    kv = kvs[0]
    if kv.get("value") == b64(lease.holder.id):
        return LossReason.STALE_TOKEN
    return LossReason.NOT_HOLDER


class EtcdLeases:
    """The :class:`~scheduler.backends.base.LeaseStore` role.

    Args:
        gateway: the gateway client.
        keys: the key layout.
        clock: the clock local deadlines and ``since`` stamps are read from.
        floors: the token floors shared with the ledger.
    """

    def __init__(self, gateway: Gateway, keys: Keys, clock: Clock, floors: TokenFloors) -> None:
        self._gw = gateway
        self._keys = keys
        self._clock = clock
        self._floors = floors
        self._closed = threading.Event()
        # The stop flag of each watched lease, by (name, token): set by a release.
        self._watches: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Take lease ``name`` if its leader key does not exist; token = its create revision."""
        seconds = lease_seconds(ttl)
        since = self._clock.now().isoformat()
        sent_at = self._clock.monotonic()
        lease_id = self._gw.grant(seconds)
        holder_key = self._keys.holder(name)
        info = json.dumps(
            {"replica": holder.replica_id, "host": holder.host, "since": since},
            separators=(",", ":"),
        )
        try:
            answer = self._gw.txn(
                [create_is(holder_key, 0)],
                [put(holder_key, holder.id, lease_id), put(self._keys.info(name), info, lease_id)],
                [get(holder_key, keys_only=True)],
            )
        except EtcdGatewayError as exc:
            # The new lease is gone already (a member's clock, an operator): try again later.
            raise BackendUnavailable(self._gw.url, str(exc)) from None
        except BackendError:
            with suppress(BackendError):
                self._gw.revoke(lease_id)
            raise
        if not answer["succeeded"]:
            for kv in answer["responses"][0].get("response_range", {}).get("kvs", []):
                self._floors.observe(name, int(kv["create_revision"]))
            with suppress(BackendError):
                self._gw.revoke(lease_id)
            return None
        token = int(answer["header"]["revision"])
        floor = self._floors.floor(name)
        if token <= floor:
            with suppress(BackendError):
                self._gw.revoke(lease_id)
            raise BackendUnavailable(
                self._gw.url,
                f"etcd's revision {token} is not above the token {floor} this replica saw "
                "(restored from a snapshot without --bump-revision?); trying again",
            )
        self._floors.observe(name, token)
        return granted(name, holder, token, ttl, sent_at, handle=str(lease_id))

    def renew(self, lease: Lease) -> Lease:
        """Keep ``lease``'s etcd lease alive and check its leader key is still ours.

        Raises:
            LeaseLost: ``expired`` (the etcd lease is gone: expired or revoked),
                ``node-deleted`` (the leader key was deleted under a live lease),
                ``not-holder`` (another holder's key).
        """
        lease_id = lease_id_of(lease)
        if not lease_id:
            raise LeaseLost(lease.name, LossReason.NOT_HOLDER)
        sent_at = self._clock.monotonic()
        if self._gw.keepalive(lease_id) <= 0:
            raise LeaseLost(lease.name, LossReason.EXPIRED)
        kvs = self._gw.range(self._keys.holder(lease.name)).get("kvs", [])
        if not kvs:
            # Deleted by someone else while our etcd lease lives: give the lease up too.
            with suppress(BackendError):
                self._gw.revoke(lease_id)
            raise LeaseLost(lease.name, LossReason.NODE_DELETED)
        kv = kvs[0]
        ours = (
            int(kv.get("create_revision", 0)) == lease.token
            and kv.get("value") == b64(lease.holder.id)
            and int(kv.get("lease", 0)) == lease_id
        )
        if not ours:
            raise LeaseLost(lease.name, lost_reason(kvs, lease))
        self._floors.observe(lease.name, lease.token)
        return lease.renewed(sent_at)

    def release(self, lease: Lease) -> None:
        """Delete the leader keys if ``lease`` still holds them: one txn, which wakes the
        followers. The etcd lease, holding no key any more, is left to expire (as
        ``concurrency``'s ``Resign`` leaves its session): a renewal of it finds no leader
        key, and a revoke would cost the releasing replica one more round trip."""
        with self._lock:
            stop = self._watches.pop((lease.name, lease.token), None)
        if stop is not None:
            stop.set()  # before the delete: a release is no loss
        self._gw.txn(
            holder_compares(self._keys, lease),
            [delete(self._keys.holder(lease.name)), delete(self._keys.info(lease.name))],
        )

    def read(self, name: str) -> LeaseRecord | None:
        """The holder of ``name``: its keys, and the seconds its etcd lease has left."""
        kvs = self._gw.range(self._keys.lease(name), prefix=True).get("kvs", [])
        by_key = {kv["key"]: kv for kv in kvs}
        holder = by_key.get(b64(self._keys.holder(name)))
        if holder is None:
            return None
        token = int(holder["create_revision"])
        self._floors.observe(name, token)
        info_kv = by_key.get(b64(self._keys.info(name)))
        info: dict[str, Any] = {}
        if info_kv is not None:
            with suppress(ValueError):
                info = json.loads(_text(info_kv))
        left = self._gw.time_to_live(int(holder.get("lease", 0)))
        since = info.get("since")
        return LeaseRecord(
            name=name,
            replica_id=str(info.get("replica", "")),
            host=str(info.get("host", "")),
            token=token,
            since=datetime.fromisoformat(since) if since else from_fire_key(0),
            ttl_left=float(max(left, 0)),
        )

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` seconds; return as soon as the leader key is deleted
        (watched from the revision it was read at, so no deletion in between is missed),
        at once if nobody holds it. Never raises: a failure waits out the time.
        """
        end = time.monotonic() + max(0.0, timeout)
        try:
            seen = self._gw.range(self._keys.holder(name), keys_only=True)
        except BackendError:
            self._closed.wait(max(0.0, end - time.monotonic()))
            return
        if not seen.get("kvs"):
            return
        start = int(seen["header"]["revision"]) + 1
        body = {
            "create_request": {
                **range_request(self._keys.holder(name)),
                "start_revision": str(start),
                "filters": ["NOPUT"],
            }
        }
        while not self._closed.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                with self._gw.watch(body, min(left, WATCH_SLICE)) as results:
                    for result in results:
                        if result.get("events") or result.get("canceled"):
                            # A deletion, or a watch etcd ended (compacted past ``start``).
                            return
            except httpx.TimeoutException:
                continue
            except (httpx.HTTPError, BackendError, ValueError):
                self._closed.wait(max(0.0, min(end - time.monotonic(), 0.05)))

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        """Call ``on_lost(reason)`` once, from a thread of its own, as soon as a watch on
        ``lease``'s leader key sees it deleted (``expired`` if its etcd lease is gone too,
        else ``node-deleted``) or rewritten (``node-modified``). Not after :meth:`release`.

        The watch starts at the revision after the key's creation (the token), so a change
        made before the watch opened is seen too; if etcd compacted past it, the key is read
        again instead.
        """
        stop = threading.Event()
        with self._lock:
            self._watches[(lease.name, lease.token)] = stop
        threading.Thread(
            target=self._watch_leader,
            args=(lease, on_lost, stop),
            name=f"etcd-lease-watch-{lease.name}",
            daemon=True,
        ).start()

    def _watch_leader(
        self, lease: Lease, on_lost: Callable[[str], None], stop: threading.Event
    ) -> None:
        start = lease.token + 1
        while not (stop.is_set() or self._closed.is_set()):
            body = {
                "create_request": {
                    **range_request(self._keys.holder(lease.name)),
                    "start_revision": str(start),
                }
            }
            try:
                with self._gw.watch(body, WATCH_SLICE) as results:
                    for result in results:
                        if stop.is_set() or self._closed.is_set():
                            return
                        if result.get("compact_revision"):
                            reason, start = self._reread(lease)
                            if reason is not None:
                                self._lose(lease, on_lost, stop, reason)
                                return
                            break
                        for event in result.get("events", []):
                            reason = LossReason.NODE_MODIFIED
                            if event.get("type") == "DELETE":
                                reason = self._deletion_reason(lease)
                            self._lose(lease, on_lost, stop, reason)
                            return
            except httpx.TimeoutException:
                continue
            except (httpx.HTTPError, BackendError, ValueError):
                stop.wait(0.05)

    def _reread(self, lease: Lease) -> tuple[LossReason | None, int]:
        """After a compaction: why ``lease`` is lost (``None``: still ours), and the revision
        to watch from."""
        try:
            answer = self._gw.range(self._keys.holder(lease.name))
        except BackendError:
            return None, lease.token + 1
        kvs = answer.get("kvs", [])
        if not kvs:
            return self._deletion_reason(lease), 0
        if int(kvs[0].get("create_revision", 0)) != lease.token:
            return LossReason.NOT_HOLDER, 0
        return None, int(answer["header"]["revision"]) + 1

    def _deletion_reason(self, lease: Lease) -> LossReason:
        try:
            alive = self._gw.time_to_live(lease_id_of(lease)) > 0
        except BackendError:
            alive = False
        return LossReason.NODE_DELETED if alive else LossReason.EXPIRED

    def _lose(
        self, lease: Lease, on_lost: Callable[[str], None], stop: threading.Event, reason: str
    ) -> None:
        with self._lock:
            if stop.is_set():
                return  # released meanwhile
            stop.set()
            self._watches.pop((lease.name, lease.token), None)
        on_lost(reason)

    def close(self) -> None:
        """Wake a waiter and end every watch."""
        self._closed.set()


def _text(kv: dict[str, Any]) -> str:
    return unb64(kv.get("value", ""))


__all__ = [
    "EtcdLeases",
    "holder_compares",
    "lease_id_of",
    "lease_seconds",
    "lost_reason",
]
