"""Presence and operator controls on PostgreSQL: a ``members`` row per replica, expiring
on the server's clock, and a ``controls`` row per (cluster, key)."""

from __future__ import annotations

from scheduler.backends.postgresql.database import Database
from scheduler.backends.rules import ttl_ms
from scheduler.leadership.members import Member

# The control key the preflight writes and deletes (no operator key: a NUL cannot be
# typed on a command line, and PostgreSQL text cannot hold one, so \x01).
PROBE_KEY = "\x01preflight"


class PostgresPresence:
    """The :class:`~scheduler.backends.base.Presence` role."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._s = db.schema

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Upsert ``member``'s presence, expiring ``ttl`` s from the server's now."""
        ttl_in_ms = ttl_ms(ttl)
        with self._db.work.call() as conn:
            conn.execute(
                f"INSERT INTO {self._s}.members (name, replica_id, record, expires_at) "
                "VALUES (%s, %s, %s, clock_timestamp() + %s * interval '1 millisecond') "
                "ON CONFLICT (name, replica_id) DO UPDATE SET record = excluded.record, "
                "expires_at = excluded.expires_at",
                (name, member.replica_id, member.to_json(), ttl_in_ms),
            )

    def withdraw(self, name: str, replica_id: str) -> None:
        """Delete ``replica_id``'s presence row."""
        with self._db.work.call() as conn:
            conn.execute(
                f"DELETE FROM {self._s}.members WHERE name = %s AND replica_id = %s",
                (name, replica_id),
            )

    def members(self, name: str) -> list[Member]:
        """Unexpired presence records, by replica id."""
        with self._db.work.call() as conn:
            rows = conn.execute(
                f"SELECT record FROM {self._s}.members WHERE name = %s "
                "AND expires_at > clock_timestamp() ORDER BY replica_id",
                (name,),
            ).fetchall()
        return [Member.from_json(str(record)) for (record,) in rows]


class PostgresControls:
    """The :class:`~scheduler.backends.base.Controls` role."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._s = db.schema

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Set or delete the control ``key``."""
        with self._db.work.call() as conn:
            if value is None:
                conn.execute(
                    f"DELETE FROM {self._s}.controls WHERE name = %s AND key = %s", (name, key)
                )
            else:
                conn.execute(
                    f"INSERT INTO {self._s}.controls (name, key, value) VALUES (%s, %s, %s) "
                    "ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
                    (name, key, value),
                )

    def controls(self, name: str) -> dict[str, str]:
        """Every control of cluster ``name``."""
        with self._db.work.call() as conn:
            rows = conn.execute(
                f"SELECT key, value FROM {self._s}.controls WHERE name = %s", (name,)
            ).fetchall()
        return {str(key): str(value) for key, value in rows if key != PROBE_KEY}


__all__ = ["PROBE_KEY", "PostgresControls", "PostgresPresence"]
