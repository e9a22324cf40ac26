"""Presence records: which replicas are alive in a cluster (``baton status``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Member:
    """One live replica as it announced itself.

    Attributes:
        replica_id: its replica id.
        host: its host name.
        version: the Baton version it runs.
        started: wall-clock time the replica started.
        last_seen: wall-clock time of its latest announcement.
    """

    replica_id: str
    host: str
    version: str
    started: datetime
    last_seen: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "replica_id": self.replica_id,
            "host": self.host,
            "version": self.version,
            "started": self.started.isoformat(),
            "last_seen": self.last_seen.isoformat(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Member:
        data = json.loads(raw)
        return cls(
            replica_id=data["replica_id"],
            host=data["host"],
            version=data["version"],
            started=datetime.fromisoformat(data["started"]),
            last_seen=datetime.fromisoformat(data["last_seen"]),
        )


#: Control keys (see LeaseBackend.set_control).
RESIGN = "resign"
PAUSE_PREFIX = "pause:"
#: ``resumed:<job>``: the job's last pauses, newest last, as a JSON list of
#: ``{"paused_at": ISO, "resumed_at": ISO}`` (the operator's clock), so no leader's catch-up
#: runs the fires those pauses skipped.
RESUMED_PREFIX = "resumed:"
#: Pauses remembered per job: more than fit in any sensible misfire_grace.
PAUSES_KEPT = 20


def paused_windows(controls: dict[str, str], job: str) -> list[tuple[datetime, datetime]]:
    """The (start, end) of ``job``'s last finished pauses (an unreadable record: none)."""
    raw = controls.get(RESUMED_PREFIX + job)
    if raw is None:
        return []
    try:
        items = json.loads(raw)
        return [
            (datetime.fromisoformat(i["paused_at"]), datetime.fromisoformat(i["resumed_at"]))
            for i in items
        ]
    except (ValueError, KeyError, TypeError):
        return []


def add_paused_window(
    controls: dict[str, str], job: str, paused_at: str, resumed_at: str, by: str
) -> str:
    """The ``resumed:<job>`` value with one more finished pause (the oldest dropped)."""
    try:
        items = json.loads(controls.get(RESUMED_PREFIX + job, "[]"))
        if not isinstance(items, list):
            items = []
    except ValueError:
        items = []
    items.append({"paused_at": paused_at, "resumed_at": resumed_at, "by": by})
    return json.dumps(items[-PAUSES_KEPT:])
