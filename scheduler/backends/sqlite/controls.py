"""Operator controls on SQLite: one ``controls`` row per (cluster, key)."""

from __future__ import annotations

from scheduler.backends.sqlite.database import Database

# The control key the preflight writes and deletes in one transaction (no operator key: a
# NUL cannot be typed on a command line).
_PROBE_KEY = "\x00preflight"


class ControlTable:
    """The :class:`~scheduler.backends.base.Controls` role on one database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Set or delete the control ``key``."""
        with self._db.write() as conn:
            if value is None:
                conn.execute("DELETE FROM controls WHERE name = ? AND key = ?", (name, key))
            else:
                conn.execute(
                    "INSERT INTO controls (name, key, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
                    (name, key, value),
                )

    def controls(self, name: str) -> dict[str, str]:
        """Every control of cluster ``name``."""
        with self._db.session() as conn:
            rows = conn.execute("SELECT key, value FROM controls WHERE name = ?", (name,))
            return {str(key): str(value) for key, value in rows.fetchall()}

    def probe(self, name: str) -> None:
        """Commit one write that leaves no trace: a control of cluster ``name`` inserted and
        deleted in one transaction (the preflight's proof that the file takes writes)."""
        with self._db.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO controls (name, key, value) VALUES (?, ?, '')",
                (name, _PROBE_KEY),
            )
            conn.execute("DELETE FROM controls WHERE name = ? AND key = ?", (name, _PROBE_KEY))


__all__ = ["ControlTable"]
