"""Run records: the claim of a fire and, once it ends, its outcome. They are the history."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

Outcome = Literal["running", "ok", "error", "lost"]
OUTCOMES: tuple[Outcome, ...] = ("running", "ok", "error", "lost")


def fire_key(scheduled_time: datetime) -> int:
    """The integer identity of a fire instant: milliseconds since the Unix epoch (UTC)."""
    return round(scheduled_time.timestamp() * 1000)


def from_fire_key(key: int) -> datetime:
    """Inverse of :func:`fire_key`."""
    return datetime.fromtimestamp(key / 1000, UTC)


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One claimed fire of a job.

    Attributes:
        job: the job name.
        scheduled_time: the fire instant (aware UTC); with ``job`` it identifies the fire.
        replica_id: the replica that claimed it.
        token: the fencing token of the lease under which it was claimed.
        started: wall-clock time of the claim.
        ended: wall-clock time the run ended, ``None`` while running.
        outcome: ``running`` until it ends, then ``ok``, ``error`` or ``lost``.
        message: the error message for ``error``/``lost``; empty otherwise.
    """

    job: str
    scheduled_time: datetime
    replica_id: str
    token: int
    started: datetime
    ended: datetime | None = None
    outcome: Outcome = "running"
    message: str = ""

    @property
    def key(self) -> int:
        """The fire identity within the job, see :func:`fire_key`."""
        return fire_key(self.scheduled_time)

    def finished(self, outcome: Outcome, ended: datetime, message: str = "") -> RunRecord:
        """This record with its end and outcome filled in."""
        return replace(self, outcome=outcome, ended=ended, message=message)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ISO-8601 timestamps)."""
        return {
            "job": self.job,
            "scheduled_time": self.scheduled_time.isoformat(),
            "replica_id": self.replica_id,
            "token": self.token,
            "started": self.started.isoformat(),
            "ended": self.ended.isoformat() if self.ended else None,
            "outcome": self.outcome,
            "message": self.message,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        outcome = data["outcome"]
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown run outcome {outcome!r}")
        return cls(
            job=data["job"],
            scheduled_time=datetime.fromisoformat(data["scheduled_time"]),
            replica_id=data["replica_id"],
            token=int(data["token"]),
            started=datetime.fromisoformat(data["started"]),
            ended=datetime.fromisoformat(data["ended"]) if data.get("ended") else None,
            outcome=outcome,
            message=data.get("message", ""),
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> RunRecord:
        return cls.from_dict(json.loads(raw))


@dataclass(frozen=True, slots=True)
class Retention:
    """How much history a backend keeps per job.

    Attributes:
        limit: keep at least the newest ``limit`` runs of each job (default 100).
        protect: seconds; runs whose fire instant is within this many seconds before the fire
            being claimed are never trimmed, whatever ``limit`` says — a new leader looks back
            that far to find unclaimed fires, and a trimmed claim would look unclaimed.
    """

    limit: int = 100
    protect: float = 0.0
