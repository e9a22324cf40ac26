"""JobContext: what a running job knows about its fire and its right to keep running."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from scheduler.clock import Clock
from scheduler.errors import LeadershipLost

#: Seconds between looks at ``lost`` by :meth:`JobContext.wait_lost` when the context has no
#: end-of-term notification (a context built by hand, e.g. in a unit test of the job).
LOST_POLL = 0.05
#: Registers a callback run once when the run's term ends; returns its remover.
OnLost = Callable[[Callable[[], None]], Callable[[], None]]


@dataclass(frozen=True)
class JobContext:
    """Passed to every job function.

    Attributes:
        job: the job name.
        scheduled_time: the fire instant this run was claimed for (aware, UTC).
        fencing_token: the token of the lease the fire was claimed under. Pass it to every
            external write so a sink can refuse writes from a deposed leader.
        replica_id: the replica running the job.
        lost: set when this replica may no longer act as leader for this run (a
            :class:`threading.Event`; in an ``async def`` job await :meth:`wait_lost`).
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
    #: Notification when the term ends (``Term.on_end``), for :meth:`wait_lost`.
    _on_lost: OnLost | None = field(default=None, repr=False)

    async def wait_lost(self, timeout: float | None = None) -> bool:
        """The awaitable form of ``ctx.lost.wait(timeout)``, for ``async def`` jobs.

        Waits without blocking the event loop (the term's end wakes it through
        ``loop.call_soon_threadsafe``) until leadership is lost or ``timeout`` seconds
        (``None``: no limit) have passed.

        Returns:
            Whether leadership was lost.
        """
        if self.lost.is_set():
            return True
        loop = asyncio.get_running_loop()
        if self._on_lost is None:
            deadline = None if timeout is None else loop.time() + timeout
            while not self.lost.is_set():
                left = LOST_POLL if deadline is None else min(LOST_POLL, deadline - loop.time())
                if left <= 0:
                    break
                await asyncio.sleep(left)
            return self.lost.is_set()
        waiter: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not waiter.done():
                waiter.set_result(None)

        def wake() -> None:  # on the thread that ended the term
            if not loop.is_closed():
                loop.call_soon_threadsafe(resolve)

        remove = self._on_lost(wake)
        try:
            await asyncio.wait([waiter], timeout=timeout)
        finally:
            remove()
            waiter.cancel()
        return self.lost.is_set()

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
