"""Backends by URL scheme: ``sqlite://``, ``redis://``/``rediss://``, ``zookeeper://``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.backends.base import LeaseBackend
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import ConfigError

if TYPE_CHECKING:
    from scheduler.backends.zookeeper import ZooKeeperOptions

SCHEMES = ("sqlite", "redis", "rediss", "zookeeper")

#: Seconds one backend call may take before it fails, when the caller does not say.
DEFAULT_OP_TIMEOUT = 2.0


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, fit for logs and error messages.

    Works on text, not on a parsed URL: a ZooKeeper URL lists several ``host:port`` pairs,
    which ``urllib`` cannot parse as one port.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hosts}{slash}{tail}"


def from_url(
    url: str,
    *,
    op_timeout: float = DEFAULT_OP_TIMEOUT,
    clock: Clock = SYSTEM_CLOCK,
    zookeeper: ZooKeeperOptions | None = None,
) -> LeaseBackend:
    """Open the backend named by ``url``.

    Args:
        url: ``sqlite:///path``, ``redis://[user:password@]host:port/db``, ``rediss://...``
            or ``zookeeper://[user:password@]host:port[,host:port...]/chroot``.
        op_timeout: seconds any single backend call may take before it fails with
            :class:`~scheduler.errors.BackendUnavailable`.
        clock: the clock deadlines are computed from.
        zookeeper: session and TLS options of a ``zookeeper://`` backend (ignored for the
            others); defaults to :class:`~scheduler.backends.zookeeper.ZooKeeperOptions`.

    Raises:
        ConfigError: the URL scheme is unknown or the URL is malformed (key ``backend``).
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "sqlite":
        from scheduler.backends.sqlite import SqliteBackend

        return SqliteBackend.from_url(url, op_timeout=op_timeout, clock=clock)
    if scheme in ("redis", "rediss"):
        from scheduler.backends.redis import RedisBackend

        return RedisBackend.from_url(url, op_timeout=op_timeout, clock=clock)
    if scheme == "zookeeper":
        from scheduler.backends.zookeeper import ZooKeeperBackend

        return ZooKeeperBackend.from_url(url, op_timeout=op_timeout, clock=clock, options=zookeeper)
    raise ConfigError(
        "backend",
        f"unsupported URL scheme {scheme or '(none)'!r} in {redact(url)!r}; "
        f"expected one of {', '.join(s + '://' for s in SCHEMES)}",
    )


__all__ = ["DEFAULT_OP_TIMEOUT", "SCHEMES", "LeaseBackend", "from_url", "redact"]
