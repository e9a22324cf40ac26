"""redis-py's exceptions as Baton's, naming the backend: denied and refused for good
(:class:`~scheduler.errors.BackendAuthError`, :class:`~scheduler.errors.BackendPermanentError`),
unreachable or busy for now (:class:`~scheduler.errors.BackendUnavailable`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis as redis_lib

from scheduler.errors import (
    BackendAuthError,
    BackendError,
    BackendPermanentError,
    BackendUnavailable,
)

# Server replies that mean "not now" rather than "never": a failover in progress, a busy
# script, a full server. redis-py strips the code from the replies it maps to a class, so
# both the classes and the raw prefixes are checked.
_TRANSIENT_ERRORS = (
    redis_lib.exceptions.ReadOnlyError,
    # A Cluster slot moved (a shard's failover, a resharding) under a node-routed pipeline.
    redis_lib.exceptions.MovedError,
    redis_lib.exceptions.AskError,
    redis_lib.exceptions.ClusterDownError,
    redis_lib.exceptions.TryAgainError,
    redis_lib.exceptions.OutOfMemoryError,
)
_TRANSIENT_REPLIES = (
    "LOADING",
    "BUSY",
    "READONLY",
    "MASTERDOWN",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MOVED",
    "ASK",
)
_AUTH_REPLIES = ("WRONGPASS", "NOAUTH", "invalid username-password pair", "invalid password")
# What a command inside a script says when the ACL denies it a command, a key or a channel
# (Redis 7.0: "The user executing the script can't ..."; later: NOPERM in the text).
# redis-py maps only replies that start with NOPERM to NoPermissionError.
_DENIED_REPLIES = ("NOPERM", "The user executing the script can't", "no permissions to")
# The server does not offer a command Baton needs (renamed or disabled by its operator).
_MISSING_REPLIES = ("unknown command", "ERR unknown command")


@contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Translate redis-py's exceptions raised inside the block into Baton's, naming ``url``.

    Raises:
        BackendAuthError: credentials refused, or an ACL denies a command, key or channel.
        BackendPermanentError: the server lacks a command Baton needs.
        BackendUnavailable: unreachable, timed out, or the server cannot serve us now.
        BackendError: any other unexpected reply.
    """
    try:
        yield
    except redis_lib.AuthenticationError:
        raise BackendAuthError(url, "authentication failed: check the password") from None
    except redis_lib.exceptions.NoPermissionError as exc:
        raise BackendAuthError(
            url, f"permission denied: the Redis user lacks an ACL permission ({exc})"
        ) from None
    except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
        raise BackendUnavailable(url, f"unreachable: {exc}") from exc
    except redis_lib.exceptions.RedisClusterException as exc:
        # No node of a Cluster answered, or its slot map is incomplete: not now.
        raise BackendUnavailable(url, f"Redis Cluster unavailable: {exc}") from exc
    except redis_lib.ResponseError as exc:
        reply = str(exc)
        if any(marker in reply for marker in _AUTH_REPLIES):
            raise BackendAuthError(url, "authentication failed: check the password") from None
        if any(marker in reply for marker in _DENIED_REPLIES):
            raise BackendAuthError(
                url,
                f"permission denied: the Redis user lacks an ACL permission "
                f"({reply.split(' script: ', 1)[0]})",
            ) from None
        if reply.startswith(_MISSING_REPLIES):
            raise BackendPermanentError(
                url, f"the server refuses a command Baton needs: {reply[:200]}"
            ) from None
        if isinstance(exc, _TRANSIENT_ERRORS) or reply.startswith(_TRANSIENT_REPLIES):
            raise BackendUnavailable(
                url, f"server cannot serve us now: {type(exc).__name__}: {reply}"
            ) from exc
        raise BackendError(url, f"unexpected reply: {reply}") from exc
    except redis_lib.RedisError as exc:
        raise BackendError(url, f"unexpected error: {exc}") from exc
    except OSError as exc:
        raise BackendUnavailable(url, f"unreachable: {exc}") from exc


__all__ = ["translate_errors"]
