"""Replication acknowledgements: the writes a job's run depends on wait for replicas.

Redis replicates asynchronously. A primary that fails over (Sentinel, a Cluster shard) may
be replaced by a replica that lacks its last writes: the last token increment, the last
lease, the last claims and starts. A claim or a start that is lost that way lets the next
leader run the same tick again. So with ``min_replicas_ack`` = *n* > 0, every call whose
answer lets a job run, or hands out a token, is followed on the same connection by
``WAIT n timeout`` (one pipeline, one round trip):

* ``try_acquire`` (the token increment and the lease), ``claim``/``claim_many``,
  ``start``/``start_many`` and ``lookup`` (a settlement reads a claim to decide to run it);
* before the ``WAIT``, an ``INCR`` of the cluster's ``acks`` key: a write of this
  connection after the call, so that the ``WAIT`` covers everything the primary had
  applied up to then, including a record another connection wrote (a resent claim, a
  looked-up record) and a call that itself wrote nothing;
* fewer than *n* acknowledgements within half of ``op_timeout`` make the call fail
  (:class:`~scheduler.errors.BackendUnavailable`): a claim or a start stays in doubt and is
  settled as an unanswered one is (the settlement's ``lookup`` is acknowledged too), an
  acquisition is given back at once.

So a claim confirmed to a job, and the start before it, are on *n* replicas; Sentinel
promotes the replica with the most data, so with *n* = every replica (the default,
``auto``: the replicas connected to the primary, counted again at each acquisition and
renewal, so a replica that died is not waited for beyond one renewal) a failover keeps
them. ``WAIT`` does **not** make Redis consistent: the write is applied on the primary
before the replicas acknowledge it (a failed ``WAIT`` does not undo it, and another client
may read it meanwhile), an acknowledged write is in the replica's memory, not on its disk,
and with *n* below the number of replicas the promoted one may be one that did not
acknowledge. Managed services that refuse ``WAIT`` need ``min_replicas_ack=0`` (and then
rely on the claim epoch and on fenced sinks, as with one primary); one that refuses
``INFO`` leaves ``auto`` at 0, so give the number there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, cast

import redis as redis_lib
from redis.commands.core import Script
from redis.exceptions import AskError, MovedError, NoScriptError

from scheduler.backends.redis.errors import translate_errors
from scheduler.backends.redis.keys import prefix
from scheduler.errors import BackendPermanentError, BackendUnavailable

#: The share of ``op_timeout`` a ``WAIT`` may take: the rest is the call itself.
WAIT_SHARE = 0.5


class NotAcknowledged(BackendUnavailable):
    """A call that ran on the primary but was not acknowledged by enough replicas in time.

    Attributes:
        reply: what the call answered on the primary (an acquisition gives its lease back).
    """

    def __init__(self, backend: str, message: str, reply: Any) -> None:
        super().__init__(backend, message)
        self.reply = reply


def ack_key(name: str) -> str:
    """The key every acknowledged call increments (see the module docstring)."""
    return f"{prefix(name)}:acks"


class Acks:
    """How many replicas must acknowledge, and the acknowledged calls.

    Args:
        wanted: ``min_replicas_ack``; ``None`` (``auto``): the replicas connected to the
            primary when :meth:`refresh` last looked (at each acquisition and renewal).
        url: the redacted URL, for messages.
        op_timeout: the bound of one call; a ``WAIT`` takes at most :data:`WAIT_SHARE` of it.
        node_client: for Redis Cluster, the client of the node that serves a key (a
            ``WAIT`` has no key to route by); ``None`` for one primary or Sentinel.
    """

    def __init__(
        self,
        wanted: int | None,
        url: str,
        op_timeout: float,
        node_client: Callable[[Any, str], Any] | None = None,
    ) -> None:
        self._wanted = wanted
        self._url = url
        self._wait_ms = max(1, round(op_timeout * WAIT_SHARE * 1000))
        self._node_client = node_client
        self._connected = 0
        self._lock = threading.Lock()

    @property
    def needed(self) -> int:
        """How many replicas must acknowledge now."""
        if self._wanted is not None:
            return self._wanted
        with self._lock:
            return self._connected

    def refresh(self, client: Any, name: str) -> None:
        """In ``auto`` mode, count the replicas connected to the primary (``INFO
        replication``). A server that refuses ``INFO`` keeps the previous count.

        Raises:
            BackendUnavailable: no answer (the acquisition fails as it would anyway).
        """
        if self._wanted is not None:
            return
        try:
            with translate_errors(self._url):
                info = self.route(client, name).info("replication")
        except BackendPermanentError:
            # INFO renamed or denied (some managed services): the count cannot be known.
            # The previous one stays (0 at first); an explicit min_replicas_ack is the fix.
            return
        connected = int(info.get("connected_slaves", 0))
        with self._lock:
            self._connected = connected

    def script(
        self, client: Any, name: str, script: Script, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run ``script`` on ``client``, acknowledged when :attr:`needed` > 0.

        Raises:
            BackendUnavailable: no answer; :class:`NotAcknowledged`: fewer acknowledgements
                than needed in time.
        """
        needed = self.needed
        if needed == 0:
            with translate_errors(self._url):
                return script(keys=list(keys), args=list(args), client=client)
        return self._acked(
            client,
            name,
            needed,
            lambda pipe: pipe.evalsha(script.sha, len(keys), *keys, *args),
            script,
        )

    def command(self, client: Any, name: str, *command: Any) -> Any:
        """Run one plain command (a read) on ``client``, acknowledged when needed."""
        needed = self.needed
        if needed == 0:
            with translate_errors(self._url):
                return client.execute_command(*command)
        return self._acked(client, name, needed, lambda pipe: pipe.execute_command(*command), None)

    def _acked(
        self,
        client: Any,
        name: str,
        needed: int,
        queue: Callable[[Any], Any],
        script: Script | None,
    ) -> Any:
        with translate_errors(self._url):
            loaded = moved = False
            while True:
                target = self.route(client, name)
                pipe = target.pipeline(transaction=False)
                queue(pipe)
                pipe.incr(ack_key(name))
                pipe.execute_command("WAIT", needed, self._wait_ms)  # type: ignore[no-untyped-call]
                try:
                    replies = pipe.execute()
                except NoScriptError:
                    # A restarted or new primary has no scripts: load it and send again
                    # (the script did not run; the INCR and the WAIT are harmless twice).
                    if script is None or loaded:
                        raise
                    target.script_load(script.script)
                    loaded = True
                    continue
                except (MovedError, AskError):
                    # The slot moved (a shard failed over): nothing ran there. Once: learn
                    # the new slot map and send to the new owner.
                    if moved:
                        raise
                    self.reroute(client)
                    moved = True
                    continue
                break
        acknowledged = int(replies[-1])
        if acknowledged < needed:
            raise NotAcknowledged(
                self._url,
                f"the write was acknowledged by {acknowledged} of the {needed} replicas "
                f"min_replicas_ack asks for within {self._wait_ms} ms",
                replies[0],
            )
        return replies[0]

    def reroute(self, client: Any) -> None:
        """Redis Cluster: read the slot map again (after ``MOVED``); a no-op elsewhere."""
        if self._node_client is not None:
            client.nodes_manager.initialize()

    def route(self, client: Any, name: str) -> redis_lib.Redis:
        """The client whose connection carries a pipeline of election ``name``: ``client``
        itself, or on Redis Cluster the node serving the election's slot (every key of an
        election is in one slot, and a cluster pipeline refuses scripts and ``WAIT``)."""
        if self._node_client is None:
            return cast(redis_lib.Redis, client)
        return cast(redis_lib.Redis, self._node_client(client, ack_key(name)))


__all__ = ["WAIT_SHARE", "Acks", "NotAcknowledged", "ack_key"]
