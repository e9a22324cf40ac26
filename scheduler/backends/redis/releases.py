"""Waiting for a lease's ``released`` event on its Redis events channel.

Shared by the Redis and the Redlock lease stores: one kept pub/sub connection, subscribed
lazily to each election's channel, dropped and made afresh after a failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import suppress

import redis as redis_lib
from redis.client import PubSub

from scheduler.backends.redis.keys import channel
from scheduler.backends.redis.scripts import RELEASED
from scheduler.errors import BackendError


class ReleaseWaiter:
    """Blocks until a lease's channel carries ``released`` or a timeout runs out.

    Must be used from one thread only, except :meth:`close`, which any thread may call.

    Args:
        connect: makes a new (unsubscribed) :class:`PubSub`; called lazily, again after a
            failure.
        on_failure: called after a failure dropped the connection, before the wait runs
            out its time (e.g. to move to another server next time).
    """

    def __init__(
        self, connect: Callable[[], PubSub], on_failure: Callable[[], None] = lambda: None
    ) -> None:
        self._connect = connect
        self._on_failure = on_failure
        self._pubsub: PubSub | None = None
        self._channels: set[str] = set()
        self._closed = threading.Event()

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` s on the events channel of ``name``; return early on
        ``released``.

        Backend errors are not raised: the wait runs out its time instead (a follower
        calls this in a loop, and returning early on every error would make it spin).
        Real time is used, not the injected clock: this is a wait on a socket.
        """
        events = channel(name)
        end = time.monotonic() + timeout
        try:
            pubsub = self._subscribed(events)
            while (remaining := end - time.monotonic()) > 0:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
                if (
                    message is not None
                    and message.get("type") == "message"
                    and message.get("channel") == events
                    and message.get("data") == RELEASED
                ):
                    return
        except (redis_lib.RedisError, OSError, ValueError, AttributeError, BackendError):
            # ValueError/AttributeError: redis-py raises these from a PubSub whose
            # connection was torn down under it (e.g. by close()). Start afresh next time.
            self._drop_pubsub()
            self._on_failure()
            self._closed.wait(max(0.0, end - time.monotonic()))

    def close(self) -> None:
        """Close the pub/sub connection and wake a waiter."""
        self._closed.set()
        self._drop_pubsub()

    def _subscribed(self, events: str) -> PubSub:
        """The kept PubSub, subscribed to ``events`` (created and subscribed lazily)."""
        if self._pubsub is None:
            self._pubsub = self._connect()
            self._channels = set()
        if events not in self._channels:
            self._pubsub.subscribe(events)
            self._channels.add(events)
        return self._pubsub

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub, self._channels = self._pubsub, None, set()
        if pubsub is not None:
            with suppress(redis_lib.RedisError, OSError):
                pubsub.close()


__all__ = ["ReleaseWaiter"]
