"""What a replica checks before it joins: every privilege it will use, asked of the server
by name, so that a missing GRANT is one clear error at start-up, not a refusal at the
first claim; and one write that leaves no trace."""

from __future__ import annotations

from scheduler.backends.postgresql.database import Database
from scheduler.backends.postgresql.presence import PROBE_KEY
from scheduler.backends.postgresql.schema import SIGNATURES, TABLE_PRIVILEGES
from scheduler.errors import BackendPermanentError


def missing_privileges(db: Database) -> list[str]:
    """The privileges of the schema's tables and functions the connected role lacks."""
    s = db.schema
    checks: list[tuple[str, str, str]] = [("schema", s, "USAGE")]
    for table, what in TABLE_PRIVILEGES:
        checks += [("table", f"{s}.{table}", one.strip()) for one in what.split(",")]
    checks += [("function", f"{s}.{signature}", "EXECUTE") for signature in SIGNATURES]
    missing = []
    with db.work.call() as conn:
        for kind, target, privilege in checks:
            row = conn.execute(
                f"SELECT has_{kind}_privilege(%s, %s)", (target, privilege)
            ).fetchone()
            if not row or not row[0]:
                missing.append(f"{privilege} on {kind} {target}")
    return missing


def preflight(db: Database, name: str) -> None:
    """Check the schema (creating it if allowed), every privilege, and one write.

    Raises:
        BackendUnavailable: no answer in time.
        BackendPermanentError: credentials, a missing privilege, a read-only server, a
            schema missing (and not to be created) or of another version.
    """
    missing = missing_privileges(db)
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        shown = ", ".join(missing[:4]) + more
        raise BackendPermanentError(
            db.url,
            f"the role lacks {shown} (README, PostgreSQL: the GRANTs Baton needs; "
            "`baton schema --print-sql --grant-to ROLE` prints them)",
        )
    with db.work.call() as conn, conn.transaction():
        conn.execute(
            f"INSERT INTO {db.schema}.controls (name, key, value) VALUES (%s, %s, '') "
            "ON CONFLICT (name, key) DO NOTHING",
            (name, PROBE_KEY),
        )
        conn.execute(
            f"DELETE FROM {db.schema}.controls WHERE name = %s AND key = %s", (name, PROBE_KEY)
        )


__all__ = ["missing_privileges", "preflight"]
