"""The ``postgresql://`` (and ``postgres://``) URL, parsed once into a :class:`PostgresTarget`.

The URL names the server(s), the database, the credentials and the few options Baton
honours; everything that bounds a call (``connect_timeout``, ``statement_timeout``, TCP
keepalives) is set from ``op_timeout`` (:mod:`.connection`) and refused in the URL, as for
Redis. TLS follows the Redis rule: a connection that encrypts but does not verify the
server (libpq's ``allow``, ``prefer``, ``require``, ``verify-ca``) is refused; the choices
are ``sslmode=disable`` (the default, plain TCP like ``redis://``) and ``verify-full``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from scheduler.backends.urls import BackendURL, URLForm, parse_host, reveal, split_url
from scheduler.errors import excerpt

#: The port of a URL without one.
DEFAULT_PORT = 5432
#: The schema Baton's tables and functions live in when the URL names none.
DEFAULT_SCHEMA = "baton"
#: The ``application_name`` the server shows for Baton's connections by default.
DEFAULT_APPLICATION = "baton"

_OPTIONS = (
    "user",
    "password",
    "dbname",
    "schema",
    "create_schema",
    "pgbouncer",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "target_session_attrs",
)
_FORM = URLForm(
    "postgresql",
    "postgresql://[user[:password]@]host[:port][,host[:port]...]/dbname[?option=value&...]",
    _OPTIONS,
)
_REFUSED = {
    option: "remove it from the URL; Baton bounds every call by op_timeout and never "
    "retries inside one"
    for option in (
        "connect_timeout",
        "statement_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "options",
    )
}
# SQL identifiers Baton creates unquoted-safe: lower case, as PostgreSQL folds them.
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_APPLICATION = re.compile(r"[ -~]{1,63}")
_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresTarget:
    """A parsed ``postgresql://`` URL.

    Attributes:
        hosts: ``(host, port)`` pairs, tried in order (libpq's multi-host form).
        dbname: the database.
        user: the role to log in as, or ``None`` (libpq's default: the OS user).
        password: the password (never shown), or ``None``.
        schema: the schema holding Baton's tables and functions (default ``baton``).
        create_schema: whether a replica may create a missing schema (default true);
            false: a missing or older schema is an error naming ``baton schema``.
        pgbouncer: the URL points at PgBouncer in transaction pooling mode: no session
            state, no prepared statements, no LISTEN (handover falls back to polling).
        sslmode: ``disable`` or ``verify-full``.
        sslrootcert: PEM file of the CAs to verify the server with.
        sslcert: PEM client certificate; ``sslkey``: its key.
        application_name: what ``pg_stat_activity`` shows for Baton's connections.
        target_session_attrs: libpq's choice among several hosts (default ``read-write``:
            never a standby).
        shown: the URL with the password replaced by ``***``.
    """

    hosts: tuple[tuple[str, int], ...]
    dbname: str
    user: str | None
    password: str | None = field(repr=False)
    schema: str
    create_schema: bool
    pgbouncer: bool
    sslmode: str
    sslrootcert: str | None
    sslcert: str | None
    sslkey: str | None
    application_name: str
    target_session_attrs: str
    shown: str


def _flag(text: str, name: str, value: str | None, default: bool) -> bool:
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise _FORM.error(text, f"{name} must be true or false, got {excerpt(value, 20)}")


def parse_url(url: str | BackendURL) -> PostgresTarget:
    """Parse ``postgresql://[user[:password]@]host[:port][,...]/dbname[?option=value&...]``.

    ``postgres://`` is the same. The password may be in the credentials (as typed or
    percent-encoded) or ``?password=``, not both; likewise the user and ``?user=``, the
    database and ``?dbname=``. Options: ``schema`` (a lower-case SQL identifier),
    ``create_schema``, ``pgbouncer`` (true/false), ``sslmode`` (``disable`` or
    ``verify-full``), ``sslrootcert``/``sslcert``/``sslkey`` (existing files; the last two
    together), ``application_name``, ``target_session_attrs`` (``read-write`` or
    ``primary``).

    Raises:
        ConfigError: naming the problem, the redacted URL and the allowed options (key
            ``backend``).
    """
    text = reveal(url)
    scheme, sep, rest = text.partition("://")
    # postgres:// is an alias: parsed as postgresql://, shown as written.
    alias = bool(sep) and scheme.lower() == "postgres"
    text_for_parts = "postgresql://" + rest if alias else text
    parts = split_url(text_for_parts, _FORM, _REFUSED)
    options = parts.options
    hosts = tuple(parse_host(item, DEFAULT_PORT, _FORM, text) for item in parts.hosts.split(","))

    dbname = parts.path[1:] if parts.path.startswith("/") else parts.path
    if "dbname" in options:
        if dbname:
            raise _FORM.error(text, "the database is given twice (in the path and as ?dbname=)")
        dbname = options["dbname"]
    if not dbname:
        raise _FORM.error(text, "the database is missing (write host/dbname)")
    if "%" in dbname or len(dbname) > 63:
        raise _FORM.error(text, f"the database name {excerpt(dbname, 70)} is malformed")

    user, password = parts.user, parts.password
    if "user" in options:
        if user:
            raise _FORM.error(text, "the user is given twice (before '@' and as ?user=)")
        user = options["user"]
    if "password" in options:
        if password is not None:
            raise _FORM.error(text, "the password is given twice (before '@' and as ?password=)")
        password = options["password"]
    if password == "":
        raise _FORM.error(text, "the password is empty")
    if password is not None and not user:
        raise _FORM.error(text, "a password needs a user (write user:password@)")

    schema = options.get("schema", DEFAULT_SCHEMA)
    if not _IDENTIFIER.fullmatch(schema) or schema.startswith("pg_"):
        raise _FORM.error(
            text,
            "schema must be 1 to 63 lower-case letters, digits or '_', not starting with a "
            f"digit or 'pg_', got {excerpt(schema, 70)}",
        )

    sslmode = options.get("sslmode", "disable")
    if sslmode not in ("disable", "verify-full"):
        raise _FORM.error(
            text,
            f"sslmode must be 'disable' or 'verify-full', got {excerpt(sslmode, 20)}: Baton "
            "never connects over TLS to a server whose certificate and name it cannot verify",
        )
    tls_files = ("sslrootcert", "sslcert", "sslkey")
    if sslmode == "disable" and any(option in options for option in tls_files):
        raise _FORM.error(text, "TLS files need sslmode=verify-full")
    if ("sslcert" in options) != ("sslkey" in options):
        raise _FORM.error(text, "sslcert and sslkey go together (give both or neither)")
    for option in tls_files:
        if option in options and not Path(options[option]).is_file():
            raise _FORM.error(text, f"{option} names no file: {excerpt(options[option], 80)}")

    application = options.get("application_name", DEFAULT_APPLICATION)
    if not _APPLICATION.fullmatch(application):
        raise _FORM.error(text, "application_name must be 1 to 63 printable characters")
    attrs = options.get("target_session_attrs", "read-write")
    if attrs not in ("read-write", "primary"):
        raise _FORM.error(
            text,
            "target_session_attrs must be 'read-write' or 'primary' (Baton writes: a "
            f"standby cannot serve it), got {excerpt(attrs, 20)}",
        )
    return PostgresTarget(
        hosts=hosts,
        dbname=dbname,
        user=user or None,
        password=password,
        schema=schema,
        create_schema=_flag(text, "create_schema", options.get("create_schema"), True),
        pgbouncer=_flag(text, "pgbouncer", options.get("pgbouncer"), False),
        sslmode=sslmode,
        sslrootcert=options.get("sslrootcert"),
        sslcert=options.get("sslcert"),
        sslkey=options.get("sslkey"),
        application_name=application,
        target_session_attrs=attrs,
        shown="postgres://" + parts.shown[len("postgresql://") :] if alias else parts.shown,
    )


__all__ = ["DEFAULT_PORT", "DEFAULT_SCHEMA", "PostgresTarget", "parse_url"]
