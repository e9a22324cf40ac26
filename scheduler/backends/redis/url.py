"""The ``redis://`` and ``rediss://`` URLs, parsed once into a :class:`RedisTarget`, and the
client they open: every call bounded by ``op_timeout`` and never retried.

Bounded calls. ``socket_timeout`` and ``socket_connect_timeout`` are both ``op_timeout`` and
the connection retry policy is ``Retry(NoBackoff(), 0)``: redis-py's default policy retries
with backoff, which can hold one call for a whole network partition, and retry policy
belongs to the elector.

Bounded pools. A client's connections come from a ``BlockingConnectionPool`` of a size
Baton chooses (:func:`connect`): a call that finds every connection busy waits for one, up
to ``op_timeout``, instead of failing at once with "Too many connections" (redis-py's
unblocking pool) or opening connections without bound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis as redis_lib
from redis.backoff import NoBackoff
from redis.retry import Retry

from scheduler.backends.urls import BackendURL, URLForm, parse_host, reveal, split_url
from scheduler.errors import excerpt

#: The port of a Redis URL without one.
DEFAULT_PORT = 6379
#: The port of a Sentinel without one.
SENTINEL_PORT = 26379
#: The highest database number a URL may name. Redis numbers its databases from 0 to
#: ``databases - 1`` (16 by default: 0-15; Redis Cluster has only 0); the bound catches
#: typos without refusing servers configured with more.
MAX_DB = 9999

_OPTIONS = ("db", "username", "password", "client_name", "min_replicas_ack")
_SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
#: The TLS options of every ``rediss`` form (also Redlock's ``rediss+redlock``).
TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
_SENTINEL_FORM = "[[user]:password@]host:port[,host:port...]/service_name[/db][?option=value&...]"
_CLUSTER_FORM = "[[user]:password@]host[:port][,host[:port]...][?option=value&...]"
_CLUSTER_OPTIONS = tuple(option for option in _OPTIONS if option != "db")
_FORMS = {
    "redis": URLForm(
        "redis", "redis://[[user]:password@]host[:port][/db][?option=value&...]", _OPTIONS
    ),
    "rediss": URLForm(
        "rediss",
        "rediss://[[user]:password@]host[:port][/db][?option=value&...]",
        _OPTIONS + TLS_OPTIONS,
    ),
    "redis+sentinel": URLForm(
        "redis+sentinel", f"redis+sentinel://{_SENTINEL_FORM}", _OPTIONS + _SENTINEL_OPTIONS
    ),
    "rediss+sentinel": URLForm(
        "rediss+sentinel",
        f"rediss+sentinel://{_SENTINEL_FORM}",
        _OPTIONS + _SENTINEL_OPTIONS + TLS_OPTIONS,
    ),
    "redis+cluster": URLForm("redis+cluster", f"redis+cluster://{_CLUSTER_FORM}", _CLUSTER_OPTIONS),
    "rediss+cluster": URLForm(
        "rediss+cluster", f"rediss+cluster://{_CLUSTER_FORM}", _CLUSTER_OPTIONS + TLS_OPTIONS
    ),
}
#: Every Redis scheme: one primary, Sentinel, Cluster; each plain and over TLS.
SCHEMES = tuple(_FORMS)
#: The most replicas ``min_replicas_ack`` may ask for (a typo guard).
MAX_REPLICAS_ACK = 100
_SERVICE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Query options that would undo the bounded, non-retrying calls; op_timeout sets them.
_MANAGED_OPTIONS = (
    "socket_timeout",
    "socket_connect_timeout",
    "timeout",
    "retry_on_timeout",
    "retry_on_error",
)
_REFUSED = {
    option: "remove it from the URL; Baton bounds every call by op_timeout and never "
    "retries inside one"
    for option in _MANAGED_OPTIONS
}
_CLIENT_NAME = re.compile(r"[!-~]{1,64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisTarget:
    """A parsed ``redis://`` or ``rediss://`` URL.

    Attributes:
        tls: ``rediss://``: TLS with the server certificate and host name always verified.
        host: the server's host name or IP address (IPv6 without brackets).
        port: 1-65535 (default 6379).
        db: the database number, 0 to :data:`MAX_DB` (default 0).
        username: the ACL user, or ``None`` (Redis's ``default`` user).
        password: the password (never shown), or ``None``.
        client_name: the name CLIENT LIST shows for Baton's connections, or ``None``.
        ssl_ca_certs: PEM file of the CAs to verify the server with (default: system CAs).
        ssl_certfile: PEM client certificate, for servers that require one.
        ssl_keyfile: the private key of ``ssl_certfile``.
        shown: the URL with the password (and secret option values) replaced by ``***``.
        mode: ``single`` (one primary), ``sentinel`` (the primary Sentinel names) or
            ``cluster`` (Redis Cluster).
        hosts: every ``(host, port)`` of the URL: the Sentinels, or the Cluster's seed
            nodes; ``(host, port)`` alone for one primary.
        service_name: the Sentinel service (``sentinel`` mode).
        min_replicas_ack: replicas that must acknowledge every write a job's run depends
            on (``WAIT``); ``None``: as many as are connected (:mod:`.acks`).
        sentinel_username: the Sentinels' ACL user, if they require one.
        sentinel_password: the Sentinels' password (never shown), if they require one.
    """

    tls: bool
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    client_name: str | None
    ssl_ca_certs: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    shown: str
    mode: str = "single"
    hosts: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    min_replicas_ack: int | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def parse_url(
    url: str | BackendURL, *, form: URLForm | None = None, mode: str | None = None
) -> RedisTarget:
    """Parse ``redis://[[user]:password@]host[:port][/db][?option=value&...]``.

    ``rediss://`` is the same over TLS. The password may be given in the URL's credentials
    (as typed, or percent-encoded) or as ``?password=``, not both; the user likewise as
    ``?username=``. Options: ``db`` (instead of the path), ``username``, ``password``,
    ``client_name``; ``rediss://`` also ``ssl_ca_certs``, ``ssl_certfile`` and
    ``ssl_keyfile`` (existing files, the last two together), ``ssl_cert_reqs=required`` and
    ``ssl_check_hostname=true`` (the only values: verification cannot be turned off).
    Timeouts and retries are not options: ``op_timeout`` bounds every call.

    ``redis+sentinel://`` (``rediss+sentinel://``) lists the Sentinels (default port 26379)
    and names the service: ``/service_name[/db]``; it also takes ``sentinel_username`` and
    ``sentinel_password`` for Sentinels that require them. ``redis+cluster://``
    (``rediss+cluster://``) lists seed nodes of a Redis Cluster and has no database. Every
    form takes ``min_replicas_ack`` (``auto``, the default, or 0 to 100: see :mod:`.acks`).

    ``form`` and ``mode`` let a scheme built on these servers parse with the same rules:
    the Redlock backend (:mod:`scheduler.backends.redlock`) passes its own form and mode
    ``redlock`` (several primaries, each with the database of the path).

    Raises:
        ConfigError: naming the problem, the redacted URL and the allowed options (key
            ``backend``).
    """
    text = reveal(url)
    scheme = text.partition("://")[0].lower()
    form = form or _FORMS.get(scheme, _FORMS["redis"])
    mode = mode or scheme.partition("+")[2] or "single"
    parts = split_url(text, form, _REFUSED)
    options = parts.options
    default_port = SENTINEL_PORT if mode == "sentinel" else DEFAULT_PORT
    hosts = tuple(parse_host(item, default_port, form, text) for item in parts.hosts.split(","))
    if mode == "single" and len(hosts) > 1:
        raise form.error(
            text,
            "one host only (several: redis+sentinel:// names the Sentinels, redis+cluster:// "
            "the Cluster's nodes)",
        )
    host, port = hosts[0]

    service_name: str | None = None
    path = parts.path
    if mode == "sentinel":
        service_name, _, path = path[1:].partition("/")
        path = "/" + path if path else ""
        if not _SERVICE.fullmatch(service_name):
            raise form.error(
                text,
                "the Sentinel service name (the path's first segment) must be 1 to 64 "
                f"letters, digits, '.', '_' or '-', got {excerpt(service_name, 70)}",
            )
    elif mode == "cluster" and path not in ("", "/"):
        raise form.error(text, "a Cluster URL has no path (Redis Cluster has database 0 only)")

    db_text = options.get("db")
    if path not in ("", "/"):
        if db_text is not None:
            raise form.error(text, "the database is given twice (in the path and as ?db=)")
        db_text = path[1:]
    db = 0
    if db_text is not None:
        if not (db_text.isascii() and db_text.isdigit() and len(db_text) <= 9):
            raise form.error(
                text,
                f"the database must be a number from 0 to {MAX_DB}, got {excerpt(db_text, 20)}",
            )
        db = int(db_text)
        if db > MAX_DB:
            raise form.error(text, f"the database must be a number from 0 to {MAX_DB}, got {db}")

    min_replicas_ack: int | None = None
    ack_text = options.get("min_replicas_ack", "auto")
    if ack_text != "auto":
        if not (ack_text.isascii() and ack_text.isdigit() and len(ack_text) <= 3):
            raise form.error(
                text,
                f"min_replicas_ack must be 'auto' or a number from 0 to {MAX_REPLICAS_ACK}, "
                f"got {excerpt(ack_text, 20)}",
            )
        min_replicas_ack = int(ack_text)
        if min_replicas_ack > MAX_REPLICAS_ACK:
            raise form.error(
                text, f"min_replicas_ack must be at most {MAX_REPLICAS_ACK}, got {ack_text}"
            )
    sentinel_password = options.get("sentinel_password")
    if sentinel_password == "":
        raise form.error(text, "the sentinel_password is empty")

    username, password = parts.user, parts.password
    if "username" in options:
        if username:
            raise form.error(text, "the user is given twice (before '@' and as ?username=)")
        username = options["username"]
    if "password" in options:
        if password is not None:
            raise form.error(text, "the password is given twice (before '@' and as ?password=)")
        password = options["password"]
    if username is not None and password is None:
        raise form.error(text, "a user needs a password (write [user]:password@)")
    if password == "":
        raise form.error(text, "the password is empty")

    client_name = options.get("client_name")
    if client_name is not None and not _CLIENT_NAME.fullmatch(client_name):
        raise form.error(text, "client_name must be 1 to 64 printable characters without spaces")

    if scheme.startswith("rediss"):
        if options.get("ssl_cert_reqs", "required").lower() != "required":
            raise form.error(
                text,
                "ssl_cert_reqs must be 'required': Baton never connects to a server "
                "whose certificate it cannot verify",
            )
        if options.get("ssl_check_hostname", "true").lower() not in ("true", "yes", "1"):
            raise form.error(
                text,
                "ssl_check_hostname must stay on: a certificate is only proof of identity "
                "for the host it names",
            )
        if ("ssl_certfile" in options) != ("ssl_keyfile" in options):
            raise form.error(
                text, "ssl_certfile and ssl_keyfile go together (give both or neither)"
            )
        for option in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if option in options and not Path(options[option]).is_file():
                raise form.error(text, f"{option} names no file: {excerpt(options[option], 80)}")
    return RedisTarget(
        tls=scheme.startswith("rediss"),
        host=host,
        port=port,
        db=db,
        mode=mode,
        hosts=hosts,
        service_name=service_name,
        min_replicas_ack=min_replicas_ack,
        sentinel_username=options.get("sentinel_username"),
        sentinel_password=sentinel_password,
        username=username or None,
        password=password,
        client_name=client_name,
        ssl_ca_certs=options.get("ssl_ca_certs"),
        ssl_certfile=options.get("ssl_certfile"),
        ssl_keyfile=options.get("ssl_keyfile"),
        shown=parts.shown,
    )


def connect(target: RedisTarget, op_timeout: float, max_connections: int) -> redis_lib.Redis:
    """A client for ``target`` whose calls are bounded by ``op_timeout`` and never retried,
    with at most ``max_connections`` connections.

    No connection is made until the first call. A call that finds all ``max_connections``
    busy waits up to ``op_timeout`` for one, then fails with
    :class:`~scheduler.errors.BackendUnavailable` (through
    :func:`~.errors.translate_errors`: redis-py's "No connection available.").

    Raises:
        ValueError: ``max_connections`` is below 1.
    """
    if max_connections < 1:
        raise ValueError(f"max_connections must be at least 1, got {max_connections!r}")
    options: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "db": target.db,
        "username": target.username,
        "password": target.password,
        "client_name": target.client_name,
        "socket_timeout": op_timeout,
        "socket_connect_timeout": op_timeout,
        "retry": Retry(NoBackoff(), 0),  # no retries, for timeouts and errors alike
        "retry_on_error": [],
        "decode_responses": True,
    }
    connection_class: type[redis_lib.Connection] = redis_lib.Connection
    if target.tls:
        connection_class = redis_lib.SSLConnection
        options.update(
            ssl_cert_reqs="required",
            ssl_check_hostname=True,
            ssl_ca_certs=target.ssl_ca_certs,
            ssl_certfile=target.ssl_certfile,
            ssl_keyfile=target.ssl_keyfile,
        )
    pool = redis_lib.BlockingConnectionPool(  # type: ignore[no-untyped-call]  # untyped in redis-py
        max_connections=max_connections,
        timeout=op_timeout,
        connection_class=connection_class,
        **options,
    )
    client = redis_lib.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True  # close() closes the pool too
    return client


__all__ = [
    "DEFAULT_PORT",
    "MAX_DB",
    "MAX_REPLICAS_ACK",
    "SCHEMES",
    "RedisTarget",
    "connect",
    "parse_url",
]
