"""Presence on SQLite: one ``members`` row per replica, expiring on the host's monotonic
clock (stamped with the boot id, like a lease row)."""

from __future__ import annotations

from scheduler.backends.rules import check_ttl
from scheduler.backends.sqlite.database import Database
from scheduler.clock import Clock
from scheduler.leadership.members import Member


class MemberTable:
    """The :class:`~scheduler.backends.base.Presence` role on one database."""

    def __init__(self, db: Database, clock: Clock, boot_id: str) -> None:
        self._db = db
        self._clock = clock
        self._boot_id = boot_id

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Upsert ``member``'s presence, expiring ``ttl`` s from now (host monotonic clock)."""
        check_ttl(ttl)
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO members (name, replica_id, record, expires_mono, boot_id) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (name, replica_id) DO UPDATE SET "
                "record = excluded.record, expires_mono = excluded.expires_mono, "
                "boot_id = excluded.boot_id",
                (
                    name,
                    member.replica_id,
                    member.to_json(),
                    self._clock.monotonic() + ttl,
                    self._boot_id,
                ),
            )

    def withdraw(self, name: str, replica_id: str) -> None:
        """Delete ``replica_id``'s presence record."""
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM members WHERE name = ? AND replica_id = ?", (name, replica_id)
            )

    def members(self, name: str) -> list[Member]:
        """Unexpired presence records of this boot, by replica id."""
        with self._db.session() as conn:
            rows = conn.execute(
                "SELECT record FROM members WHERE name = ? AND expires_mono > ? AND boot_id = ? "
                "ORDER BY replica_id",
                (name, self._clock.monotonic(), self._boot_id),
            ).fetchall()
        return [Member.from_json(record) for (record,) in rows]


__all__ = ["MemberTable"]
