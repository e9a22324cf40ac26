"""Backends by URL scheme: ``sqlite://``, ``redis://``/``rediss://``, ``zookeeper://``,
``postgresql://``/``postgres://``, ``etcd://``/``etcds://``.

The contract every backend keeps is :mod:`scheduler.backends.base` (one protocol per role:
lease store, run ledger, presence, controls, preflight); the rules they share are
:mod:`scheduler.backends.rules` (trimming, TTLs, lease grants) and
:mod:`scheduler.backends.states` (loss reasons, connection states).

Each scheme has one parser that turns its URL into typed options with an allow-list
(:func:`check_url` runs it without opening anything); :func:`redact` hides credentials in
any text. The URL rules are in :mod:`scheduler.backends.urls` and the README ("Backends").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scheduler.backends.base import DEFAULT_OP_TIMEOUT, Backend, LeaseBackend
from scheduler.backends.urls import BackendURL, redact, reveal, scheme_of, shown_excerpt
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import ConfigError, excerpt

if TYPE_CHECKING:
    from scheduler.backends.zookeeper import ZooKeeperOptions

SCHEMES = (
    "sqlite",
    "redis",
    "rediss",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
    "zookeeper",
    "postgresql",
    "postgres",
    "etcd",
    "etcds",
    "redlock",
    "rediss+redlock",
)
_REDIS_SCHEMES = SCHEMES[1:7]


def _unsupported(url: str) -> ConfigError:
    scheme = scheme_of(url)
    named = f"unsupported URL scheme {excerpt(scheme, 32)}" if scheme else "no URL scheme"
    return ConfigError(
        "backend",
        f"{named} in {shown_excerpt(url)}; expected one of {', '.join(s + '://' for s in SCHEMES)}",
    )


def _missing_extra(
    shown: str, backend: str, library: str, extra: str, exc: ImportError
) -> ConfigError:
    """The error for a backend whose optional dependency is not installed."""
    return ConfigError(
        "backend",
        f"{shown}: the {backend} backend needs {library} "
        f"(pip install 'baton[{extra}]'): {excerpt(str(exc), 80)}",
    )


def check_url(url: str | BackendURL) -> str:
    """Parse ``url`` with its scheme's parser, opening nothing; the redacted URL.

    Raises:
        ConfigError: the scheme is unknown or the URL malformed (key ``backend``), naming
            the problem, the redacted URL and the scheme's allowed options.
    """
    text = reveal(url)
    scheme = scheme_of(text)
    if scheme == "sqlite":
        from scheduler.backends.sqlite import path_from_url

        path_from_url(text)
        return redact(text)
    if scheme in _REDIS_SCHEMES:
        from scheduler.backends import redis

        return redis.parse_url(text).shown
    if scheme == "zookeeper":
        from scheduler.backends import zookeeper

        return zookeeper.parse_url(text).shown
    if scheme in ("postgresql", "postgres"):
        from scheduler.backends import postgresql

        return postgresql.parse_url(text).shown
    if scheme in ("etcd", "etcds"):
        from scheduler.backends import etcd

        return etcd.parse_url(text).shown
    if scheme in ("redlock", "rediss+redlock"):
        from scheduler.backends import redlock

        return redlock.parse_url(text).shown
    raise _unsupported(text)


def from_url(
    url: str | BackendURL,
    *,
    op_timeout: float = DEFAULT_OP_TIMEOUT,
    clock: Clock = SYSTEM_CLOCK,
    zookeeper: ZooKeeperOptions | None = None,
    create: bool = True,
) -> Backend:
    """Open the backend named by ``url``.

    Args:
        url: ``sqlite:///path``, ``redis://[[user]:password@]host[:port][/db]``,
            ``rediss://...``, ``zookeeper://[user:password@]host:port[,host:port...]/chroot``
            ``postgresql://[user[:password]@]host[:port][,...]/dbname[?options]`` or
            ``etcd://[user:password@]host[:port][,...][/prefix][?options]``
            (README, "Backends", for every form and option).
        op_timeout: seconds any single backend call may take before it fails with
            :class:`~scheduler.errors.BackendUnavailable`.
        clock: the clock deadlines are computed from.
        zookeeper: session and TLS options of a ``zookeeper://`` backend (ignored for the
            others); defaults to :class:`~scheduler.backends.zookeeper.ZooKeeperOptions`.
        create: whether a missing embedded (SQLite) database, or a missing PostgreSQL schema,
            may be created. Only a replica creates one; read and operator commands pass
            ``False`` and get a :class:`~scheduler.errors.ConfigError` for a missing file (a
            :class:`~scheduler.errors.BackendSchemaError` for a missing schema) instead.

    Raises:
        ConfigError: the URL scheme is unknown or the URL is malformed (key ``backend``).
    """
    text = reveal(url)
    scheme = scheme_of(text)
    if scheme == "sqlite":
        from scheduler.backends.sqlite import SqliteBackend

        return SqliteBackend.from_url(text, op_timeout=op_timeout, clock=clock, create=create)
    if scheme in _REDIS_SCHEMES:
        from scheduler.backends.redis import RedisBackend

        return RedisBackend.from_url(text, op_timeout=op_timeout, clock=clock)
    if scheme == "zookeeper":
        from scheduler.backends.zookeeper import ZooKeeperBackend

        return ZooKeeperBackend.from_url(
            text, op_timeout=op_timeout, clock=clock, options=zookeeper
        )
    if scheme in ("postgresql", "postgres"):
        from scheduler.backends.postgresql import parse_url

        target = parse_url(text)
        try:
            from scheduler.backends.postgresql.backend import PostgresBackend
        except ImportError as exc:
            raise _missing_extra(
                target.shown, "PostgreSQL", "psycopg 3", "postgresql", exc
            ) from None
        return PostgresBackend(target, op_timeout=op_timeout, clock=clock, create=create)
    if scheme in ("redlock", "rediss+redlock"):
        from scheduler.backends.redlock import RedlockBackend

        return RedlockBackend.from_url(text, op_timeout=op_timeout, clock=clock)
    if scheme in ("etcd", "etcds"):
        from scheduler.backends.etcd import parse_url as parse_etcd_url

        etcd_target = parse_etcd_url(text)
        try:
            from scheduler.backends.etcd.backend import EtcdBackend
        except ImportError as exc:
            raise _missing_extra(etcd_target.shown, "etcd", "httpx", "etcd", exc) from None
        return EtcdBackend(etcd_target, op_timeout=op_timeout, clock=clock)
    raise _unsupported(text)


__all__ = [
    "DEFAULT_OP_TIMEOUT",
    "SCHEMES",
    "Backend",
    "BackendURL",
    "LeaseBackend",
    "check_url",
    "from_url",
    "redact",
]
