"""psycopg's errors as Baton's: transient (:class:`~scheduler.errors.BackendUnavailable`)
when retrying may help, permanent when it cannot.

Transient: no connection, a connection cut (a server restart, ``pg_terminate_backend``, a
failover), a statement cancelled by ``statement_timeout`` or by Baton's own deadline, a
standby that cannot take writes (a failover in progress), a deadlock or serialization
failure. Permanent: credentials refused, a privilege missing, a schema missing or of
another version, a database that does not exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg

from scheduler.errors import (
    BackendAuthError,
    BackendError,
    BackendPermanentError,
    BackendSchemaError,
    BackendUnavailable,
)

# SQLSTATE classes and codes, as the PostgreSQL manual's Appendix A lists them.
_AUTH = ("28000", "28P01")  # invalid authorization, invalid password
_PRIVILEGE = "42501"  # insufficient privilege
_MISSING = ("42P01", "42883", "3F000")  # undefined table, function, schema
_NO_DATABASE = "3D000"
_READ_ONLY = "25006"  # read-only SQL transaction: a standby


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def translate(exc: psycopg.Error, url: str, *, timed_out: bool = False) -> BackendError:
    """``exc`` as the error to raise (see the module docstring).

    Args:
        exc: what psycopg raised.
        url: the redacted backend URL, for the message.
        timed_out: Baton's deadline cut the call (its connection was shut down).
    """
    if timed_out:
        return BackendUnavailable(url, "no answer within op_timeout (the call was cut off)")
    state = exc.sqlstate or ""
    message = _first_line(exc)
    if state in _AUTH or "password authentication failed" in message:
        return BackendAuthError(url, f"credentials refused: {message}")
    if state == _PRIVILEGE:
        return BackendPermanentError(
            url, f"permission denied: {message} (README, PostgreSQL: the GRANTs Baton needs)"
        )
    if state in _MISSING:
        return BackendSchemaError(
            url,
            f"Baton's schema is missing or incomplete: {message} (create it with `baton "
            "schema --print-sql`, or let a replica create it: create_schema=true)",
        )
    if state == _NO_DATABASE or ("database" in message and "does not exist" in message):
        return BackendPermanentError(url, message)
    if "unsupported startup parameter" in message:
        return BackendPermanentError(
            url,
            f"{message}: is this PgBouncer? Add ?pgbouncer=true to the URL (Baton then "
            "sends no startup options and keeps no session state)",
        )
    if state == _READ_ONLY:
        return BackendUnavailable(url, f"the server is a read-only standby: {message}")
    return BackendUnavailable(url, message)


@contextlib.contextmanager
def translate_errors(url: str) -> Iterator[None]:
    """Raise every psycopg error inside as a :class:`~scheduler.errors.BackendError`."""
    try:
        yield
    except psycopg.Error as exc:
        raise translate(exc, url) from exc


__all__ = ["translate", "translate_errors"]
