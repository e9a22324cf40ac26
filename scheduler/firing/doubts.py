"""The values of settling claims in doubt: a doubt, a suspect, a handover, what one settling
pass leaves to the runner, and the backoff between two looks at an unsettled fire.

:class:`~scheduler.firing.recovery.Recovery` keeps and settles them (its docstring tells the
rules); :class:`Fire` is also what the claims layer claims and a lane queues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.backends.runs import RunRecord
from scheduler.firing.tally import SAMPLE
from scheduler.leadership.term import Term

__all__ = [
    "BACKOFF_CAP",
    "NEVER_STARTED",
    "ORPHAN_MESSAGE",
    "SETTLE_INTERVAL",
    "Doubt",
    "Fire",
    "Handover",
    "Key",
    "SettlePass",
    "Settled",
    "Suspect",
    "backoff",
]

#: Seconds before an unsettled fire is looked up again the first time; each further look
#: waits twice as long, up to :data:`BACKOFF_CAP`. A look costs one read per fire.
SETTLE_INTERVAL = 0.25
#: The longest wait between two looks at one unsettled fire (seconds). A claim that landed
#: unanswered is run at most this much later than it could be; a fire nobody can settle
#: costs one read per fire this often until misfire_grace gives it up.
BACKOFF_CAP = 4.0


def backoff(tries: int) -> float:
    """Seconds before the next look at a fire looked at (or handed over) ``tries`` times."""
    return min(BACKOFF_CAP, SETTLE_INTERVAL * float(2 ** min(tries, 16)))


#: The message a new leader writes on a run it found ``running`` under an older token.
ORPHAN_MESSAGE = "its replica stopped before the run ended"
#: The message on a claim nobody started before misfire_grace ran out.
NEVER_STARTED = "claimed but never started"

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire of one job, as the claims layer claims it and a lane queues it.

    Attributes:
        job: the job name.
        at: the fire instant.
        keep: a claim already made (handed over by settling): the lane runs it even where
            the job coalesces a backlog to its newest fire.
    """

    job: str
    at: datetime
    keep: bool = False


@dataclass(frozen=True, slots=True)
class Settled:
    """What one settling pass leaves to the runner.

    Attributes:
        fires: to queue on their lanes (adopted or resent claims with ``keep``; fires given
            back, or to claim afresh in a newer term, without).
        catch_up: the current term, if it skipped fires while the backend did not answer
            and should now catch up; else ``None``.
    """

    fires: list[Fire] = field(default_factory=list)
    catch_up: Term | None = None


@dataclass(frozen=True, slots=True)
class Doubt:
    """A claim attempt of ours whose fate is unknown (unanswered, or claimed and not started)."""

    run: RunRecord  # the claim attempt as sent (state claimed), ours, never started by us
    since: float  # monotonic time the doubt arose
    tries: int = 0  # looks (and resends) so far
    due: float = 0.0  # monotonic time of the next look


@dataclass(frozen=True, slots=True)
class Handover:
    """A claim attempt of this replica's current term that recovery gives to its lane.

    Attributes:
        run: the attempt: as sent (``resend``) or as found stored (adopted).
        resend: ``True``: no record was found, send the same claim again; ``False``: the
            record of this attempt was found (``claimed``, or ``running`` after a start
            whose answer was lost), run it without claiming again.
    """

    run: RunRecord
    resend: bool


@dataclass(frozen=True, slots=True)
class Suspect:
    """A claim an older term left ``claimed``, watched by a new leader in case it is given
    back."""

    run: RunRecord  # the orphaned record, under its claimant's token
    leader_token: int  # the term that watches it
    tries: int = 0  # looks so far
    due: float = 0.0  # monotonic time of the next look


class SettlePass:
    """The counts of one settling pass, logged as one ``claims_settled`` line."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.jobs: set[str] = set()

    def note(self, what: str, job: str) -> None:
        """Count one fire settled as ``what`` (a sample of the jobs is kept)."""
        self.counts[what] = self.counts.get(what, 0) + 1
        if len(self.jobs) < SAMPLE:
            self.jobs.add(job)

    def log(self, log: Any) -> None:
        """Write the pass's ``claims_settled`` line, if it changed anything."""
        if self.counts:
            log.info("claims_settled", **dict(sorted(self.counts.items())), jobs=sorted(self.jobs))
