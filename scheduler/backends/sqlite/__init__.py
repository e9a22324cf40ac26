"""The embedded default backend: replicas on one host sharing one SQLite file, no server.

One role a module, behind the façade :class:`SqliteBackend` (:mod:`.backend`):

* :mod:`.database`: the connection, ``BEGIN IMMEDIATE`` transactions, WAL, errors
  (:mod:`.errors`) and the schema (:mod:`.schema`);
* :mod:`.lease`: the lease store, and why expiry reads the host's monotonic clock (so this
  backend is for one host only);
* :mod:`.ledger`: run records, claims in one transaction with the lease check;
* :mod:`.presence` and :mod:`.controls`;
* :mod:`.url`: the ``sqlite:///`` URL.
"""

from __future__ import annotations

from scheduler.backends.sqlite.backend import SqliteBackend
from scheduler.backends.sqlite.lease import BOOT_ID_PATH, POLL_INTERVAL, read_boot_id
from scheduler.backends.sqlite.schema import SCHEMA_VERSION
from scheduler.backends.sqlite.url import path_from_url

__all__ = [
    "BOOT_ID_PATH",
    "POLL_INTERVAL",
    "SCHEMA_VERSION",
    "SqliteBackend",
    "path_from_url",
    "read_boot_id",
]
