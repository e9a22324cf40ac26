r"""Run records: the claim of a fire and, once it ends, its outcome. They are the history.

A record moves through one state machine, and only forward::

    claimed --start--> running --finish--> ok | error | lost
       |  \--finish--> lost   (claimed but never started, past misfire_grace)
       \--unclaim--> (deleted: the fire is free again)

Only a ``claimed`` record can be given back (:meth:`~scheduler.backends.base.LeaseBackend.
unclaim`), and only by the attempt that made it: once a fire has started, no path deletes
or frees its record (see :mod:`scheduler.firing.claims` for the invariants each path keeps).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

Outcome = Literal["claimed", "running", "ok", "error", "lost"]
OUTCOMES: tuple[Outcome, ...] = ("claimed", "running", "ok", "error", "lost")
#: The states of a fire that has not ended: history trimming never deletes these.
UNFINISHED: tuple[Outcome, ...] = ("claimed", "running")


def new_attempt_id() -> str:
    """A fresh claim-attempt identity: 128 random bits, hex (never equal to another's)."""
    return uuid.uuid4().hex


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
        started: wall-clock time of the claim, then of the start.
        ended: wall-clock time the run ended, ``None`` while running.
        outcome: ``claimed`` until the claimant starts it, ``running`` until it ends, then
            ``ok``, ``error`` or ``lost``.
        message: the error message for ``error``/``lost``; empty otherwise.
        attempt: the identity of the claim attempt that wrote the record (see
            :func:`new_attempt_id`). A fire proposed twice by one replica is two attempts
            unless the second is a resend of the first; ``start``, ``finish`` and ``unclaim``
            act only on the record of their own attempt. Records written before attempts
            existed read as ``""``, which no attempt matches.
    """

    job: str
    scheduled_time: datetime
    replica_id: str
    token: int
    started: datetime
    ended: datetime | None = None
    outcome: Outcome = "claimed"
    message: str = ""
    attempt: str = field(default_factory=new_attempt_id)

    @property
    def unfinished(self) -> bool:
        """``claimed`` or ``running``: the fire has not ended (trimming keeps it)."""
        return self.outcome in UNFINISHED

    def started_now(self, at: datetime) -> RunRecord:
        """This claim as started at ``at`` (``running``): what :meth:`start` stores."""
        return replace(self, outcome="running", started=at)

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
            "attempt": self.attempt,
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
            attempt=str(data.get("attempt", "")),
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
