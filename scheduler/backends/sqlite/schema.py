"""The tables of a Baton SQLite file, and their upgrade in place.

Schema (version 3, kept in ``PRAGMA user_version``)::

    lease(name PK, holder_id, token, replica, host, since_iso, ttl, expires_mono, boot_id)
    tokens(name PK, last_token, releases)  -- never deleted: tokens are never reused
    runs(name, job, fire_key, token, outcome, record, attempt, PK(name, job, fire_key))
    members(name, replica_id, record, expires_mono, boot_id, PK(name, replica_id))
    controls(name, key, value, PK(name, key))

Version 2 added ``members`` and ``controls``, version 3 ``runs.attempt``; older files are
upgraded in place when first opened (rows written before attempts existed get ``''``, which
no attempt matches).

``runs.record`` is the :meth:`~scheduler.backends.runs.RunRecord.to_json` of the record; the
other columns index it and are written with it in the same statement (``outcome`` at claim,
start and finish), so that claim, start, finish and unclaim compare the claim's attempt and
state in their ``WHERE`` clauses, inside their one transaction.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from scheduler.errors import BackendSchemaError, ConfigError, excerpt

#: 2 added members and controls, 3 added ``runs.attempt``; older files are upgraded in place.
SCHEMA_VERSION = 3

# One statement per entry: executescript() would commit on its own, outside our transaction.
_TABLES = (
    """
    CREATE TABLE IF NOT EXISTS lease (
        name         TEXT PRIMARY KEY,
        holder_id    TEXT NOT NULL,
        token        INTEGER NOT NULL,
        replica      TEXT NOT NULL,
        host         TEXT NOT NULL,
        since_iso    TEXT NOT NULL,
        ttl          REAL NOT NULL,
        expires_mono REAL NOT NULL,
        boot_id      TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS tokens (
        name       TEXT PRIMARY KEY,
        last_token INTEGER NOT NULL,
        releases   INTEGER NOT NULL DEFAULT 0
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS runs (
        name     TEXT NOT NULL,
        job      TEXT NOT NULL,
        fire_key INTEGER NOT NULL,
        token    INTEGER NOT NULL,
        outcome  TEXT NOT NULL,
        record   TEXT NOT NULL,
        attempt  TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (name, job, fire_key)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS members (
        name         TEXT NOT NULL,
        replica_id   TEXT NOT NULL,
        record       TEXT NOT NULL,
        expires_mono REAL NOT NULL,
        boot_id      TEXT NOT NULL,
        PRIMARY KEY (name, replica_id)
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS controls (
        name  TEXT NOT NULL,
        key   TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (name, key)
    )
    """,
)

# Added by schema version 3; a version-1 or -2 file's runs table gains it in place.
_ADD_ATTEMPT = "ALTER TABLE runs ADD COLUMN attempt TEXT NOT NULL DEFAULT ''"


def create_schema(conn: sqlite3.Connection, url: str, path: Path) -> None:
    """Create or upgrade the tables once; many processes may race here, the write lock
    orders them.

    Raises:
        BackendSchemaError: the file has a newer or unknown schema version.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise BackendSchemaError(
                url,
                f"{path} has schema version {version}, newer than this Baton "
                f"supports ({SCHEMA_VERSION}); upgrade Baton",
            )
        if version not in (0, 1, 2, SCHEMA_VERSION):
            raise BackendSchemaError(url, f"{path} has unknown schema version {version}")
        for statement in _TABLES:
            conn.execute(statement)
        # Asked, not inferred from the version: the runs table CREATE TABLE just made has
        # the column already, and so has a file another process upgraded after our first
        # read of user_version; adding it twice would fail.
        columns = {str(row[1]) for row in conn.execute("PRAGMA table_info(runs)")}
        if "attempt" not in columns:
            conn.execute(_ADD_ATTEMPT)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.rollback()
        raise


def require_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse, without writing, a file that holds no Baton database (``create=False``).

    Raises:
        ConfigError: no replica ever created the schema in the file (key ``backend``).
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version == 0:
        raise ConfigError(
            "backend",
            f"{excerpt(str(path))} holds no Baton database (no replica has run on "
            "it: check the path, or start one with `baton run`)",
        )


__all__ = ["SCHEMA_VERSION", "create_schema", "require_schema"]
