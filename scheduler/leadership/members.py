"""Presence records: which replicas are alive in a cluster and which jobs they schedule."""

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
        jobs: the names of the jobs it schedules (``baton pause`` checks a name against
            them); ``None`` when it did not say (a replica of an older version).
    """

    replica_id: str
    host: str
    version: str
    started: datetime
    last_seen: datetime
    jobs: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "replica_id": self.replica_id,
            "host": self.host,
            "version": self.version,
            "started": self.started.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "jobs": None if self.jobs is None else list(self.jobs),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Member:
        data = json.loads(raw)
        jobs = data.get("jobs")
        # Any process with backend access can write a presence record: a job list that is
        # not a list of strings reads as "did not say", never as names.
        valid = isinstance(jobs, list) and all(isinstance(j, str) for j in jobs)
        return cls(
            replica_id=data["replica_id"],
            host=data["host"],
            version=data["version"],
            started=datetime.fromisoformat(data["started"]),
            last_seen=datetime.fromisoformat(data["last_seen"]),
            jobs=tuple(jobs) if valid else None,
        )
