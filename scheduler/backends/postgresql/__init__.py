"""The PostgreSQL backend (``postgresql://``, ``postgres://``): the database teams already
run, with the database's clock and a fencing token that survives a failover.

One role a module, behind the façade :class:`PostgresBackend` (:mod:`.backend`):

* :mod:`.url`: the URL and its options;
* :mod:`.database`: bounded pools (the lease's own connection), bounded calls, the schema
  check; :mod:`.errors`: psycopg's errors as Baton's;
* :mod:`.schema`: the tables and the server-side functions (every compare-and-act), the
  DDL for a DBA, the GRANTs;
* :mod:`.lease`: the lease row, and why not an advisory lock; :mod:`.ledger`: run records;
  :mod:`.presence`: presence and controls; :mod:`.preflight`.

Needs the optional dependency ``psycopg`` (``pip install 'baton[postgresql]'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from scheduler.backends.postgresql.schema import SCHEMA_VERSION, grants, script
from scheduler.backends.postgresql.url import DEFAULT_SCHEMA, PostgresTarget, parse_url

if TYPE_CHECKING:
    from scheduler.backends.postgresql.backend import PostgresBackend


def __getattr__(name: str) -> Any:
    # The URL and the DDL need no driver; the backend imports psycopg, an optional extra.
    if name == "PostgresBackend":
        from scheduler.backends.postgresql.backend import PostgresBackend

        return PostgresBackend
    raise AttributeError(name)


__all__ = [
    "DEFAULT_SCHEMA",
    "SCHEMA_VERSION",
    "PostgresBackend",
    "PostgresTarget",
    "grants",
    "parse_url",
    "script",
]
