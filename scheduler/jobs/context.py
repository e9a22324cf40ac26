"""JobContext: what a running job knows about its fire and its right to keep running."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from scheduler.clock import Clock
from scheduler.errors import LeadershipLost


@dataclass(frozen=True)
class JobContext:
    """Passed to every job function.

    Attributes:
        job: the job name.
        scheduled_time: the fire instant this run was claimed for (aware, UTC).
        fencing_token: the token of the lease the fire was claimed under. Pass it to every
            external write so a sink can refuse writes from a deposed leader.
        replica_id: the replica running the job.
        lost: set when this replica may no longer act as leader for this run.
    """

    job: str
    scheduled_time: datetime
    fencing_token: int
    replica_id: str
    lost: threading.Event = field(repr=False)
    _deadline: Callable[[], float] = field(repr=False)
    _clock: Clock = field(repr=False)
    #: Extra reason the run must stop, e.g. a stall not yet re-validated; None if fine.
    _suspect: Callable[[], str | None] = field(default=lambda: None, repr=False)

    def time_left(self) -> float:
        """Seconds until the local lease deadline (monotonic clock, no network); <= 0 if gone."""
        if self.lost.is_set():
            return 0.0
        return self._deadline() - self._clock.monotonic()

    def check(self) -> None:
        """Return if this run may go on; raise otherwise. Costs no network call.

        Raises:
            LeadershipLost: leadership was lost, or the lease's local deadline has passed
                (e.g. the process was paused longer than the lease).
        """
        if self.lost.is_set():
            raise LeadershipLost(self.job, "lease lost")
        if self._deadline() - self._clock.monotonic() <= 0:
            raise LeadershipLost(self.job, "local lease deadline passed")
        suspect = self._suspect()
        if suspect is not None:
            raise LeadershipLost(self.job, suspect)
