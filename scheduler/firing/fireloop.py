"""The fire loop: every job's next instant, handed to the lanes early enough to be claimed.

Every replica runs it, leader or not (a follower's fires are dropped by the claims layer).
The jobs' triggers (APScheduler's, :mod:`scheduler.jobs.schedules`) compute the instants;
this loop replaces APScheduler's scheduler loop, which handed fires over one job at a time
at a fixed lead. With 10,000 jobs due at one instant that spread the hand-over of one burst
over a third of a second, so the claims of its last fires were made after the instant and
competed with the first runs (issue 13: p99 lateness 2 s against 0.7 s for bare APScheduler).

Here the loop knows how many fires fall due at each instant and hands all of them over
together, at ``instant - lead``: the lead is :data:`~scheduler.firing.catchup.CLAIM_AHEAD`
plus the time their claims are expected to take (:class:`Pace`: the recent seconds per
claimed fire, times the fires), at most :data:`~scheduler.firing.catchup.MOST_AHEAD`. So a
burst is claimed before its instant and only started there.

A fire the loop has handed over is never handed over again; :meth:`FireLoop.unhanded` says
where each job stands, so a new leader's catch-up plans exactly the fires handed over (and
dropped) before it led.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger

from scheduler.clock import Clock
from scheduler.firing.batching import HandlerThread
from scheduler.firing.catchup import CLAIM_AHEAD, MOST_AHEAD

__all__ = ["MAX_WAIT", "STOP_WAIT", "FireLoop", "Pace"]

#: The longest the loop sleeps without looking at the clock again (seconds): a wall clock
#: stepped forward (NTP, a resumed VM) is noticed within this; one wake-up per second idles
#: at a few microseconds of CPU.
MAX_WAIT = 1.0
#: The longest :meth:`FireLoop.stop` waits for the loop's lock, in seconds: far longer than
#: the loop ever holds it (microseconds to hand an instant over), short enough not to hold
#: up a shutdown.
STOP_WAIT = 1.0


class Pace:
    """The recent cost of a claim, in seconds per fire: how far ahead a burst is handed over.

    An exponentially weighted mean over claim batches (weight :data:`WEIGHT` for the newest),
    starting from :data:`FIRST`. Written by the claim thread, read by the fire loop; a
    float is replaced atomically, so no lock.
    """

    #: Seconds per fire before any claim was timed: 50 µs (a Redis or SQLite batch on
    #: loopback measures 20-30 µs per fire; ZooKeeper more, which the first bursts teach).
    FIRST = 50e-6
    #: Weight of the newest batch in the mean.
    WEIGHT = 0.3

    def __init__(self) -> None:
        self.per_fire = self.FIRST

    def record(self, seconds: float, fires: int) -> None:
        """A claim batch of ``fires`` fires took ``seconds``."""
        if fires > 0 and seconds >= 0:
            self.per_fire += self.WEIGHT * (seconds / fires - self.per_fire)

    def lead(self, fires: int) -> timedelta:
        """How long before their instant ``fires`` fires are handed over."""
        ahead = CLAIM_AHEAD + timedelta(seconds=self.per_fire * fires)
        return min(ahead, MOST_AHEAD)


class FireLoop(HandlerThread[tuple[str, datetime]]):
    """One thread that hands each job's fires to ``handover`` ahead of their instants.

    Args:
        triggers: each job's trigger, by job name.
        handover: called on the loop's thread with ``(job, instant)`` pairs, every fire of
            one or more instants at once, in instant order; it must not block for long.
        clock: the wall clock instants are read on.
        pace: how far ahead a burst is handed over.
        log: the runner's logger (``batch_failed`` if ``handover`` raises; the loop goes
            on).
    """

    def __init__(
        self,
        triggers: Mapping[str, BaseTrigger],
        handover: Callable[[list[tuple[str, datetime]]], None],
        clock: Clock,
        pace: Pace,
        log: Any,
    ) -> None:
        super().__init__("baton-fires", self._hand_over, log)
        self._triggers = dict(triggers)
        self._handover = handover
        self._clock = clock
        self._pace = pace
        #: The jobs due at each instant not handed over yet.
        self._due: dict[datetime, list[str]] = {}
        #: The instants of ``_due``, a heap; an instant handed over stays until it surfaces.
        self._instants: list[datetime] = []
        #: Each job's next instant not handed over (absent: its trigger has no more fires).
        self._next: dict[str, datetime] = {}

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and not self._stopped

    def start(self) -> None:
        """Compute every job's first instant from now, and start the thread."""
        now = self._clock.now()
        with self._cond:
            for job, trigger in self._triggers.items():
                self._schedule(job, trigger.get_next_fire_time(None, now))
            self._start_locked()

    def stop(self) -> None:
        """Hand nothing over any more (a hand-over in progress finishes).

        Never blocks shutdown for long: the flag is set first, and the loop is woken only if
        its lock can be had within :data:`STOP_WAIT` (a loop thread killed while holding it,
        as a test does with an asynchronous exception, would otherwise hang the caller).
        """
        self._stopped = True
        if self._cond.acquire(timeout=STOP_WAIT):
            try:
                self._cond.notify()
            finally:
                self._cond.release()

    def wake(self) -> None:
        """Look at the clock again now."""
        with self._cond:
            self._cond.notify()

    def unhanded(self, job: str) -> datetime | None:
        """``job``'s first instant the loop has not handed over yet (every earlier one it
        has); ``None`` if its trigger has no more fires."""
        with self._cond:
            return self._next.get(job)

    def _schedule(self, job: str, instant: datetime | None) -> None:
        """Make ``instant`` ``job``'s next one (with ``_cond`` held)."""
        if instant is None:
            self._next.pop(job, None)
            return
        instant = instant.astimezone(UTC)
        self._next[job] = instant
        jobs = self._due.get(instant)
        if jobs is None:
            self._due[instant] = [job]
            heapq.heappush(self._instants, instant)
        else:
            jobs.append(job)

    def _take(self) -> list[tuple[str, datetime]] | None:
        """The fires to hand over now (waiting until there are some); ``None``: stopped."""
        with self._cond:
            while not self._stopped:
                now = self._clock.now()
                ready, wake_at = self._ready(now)
                if ready:
                    return ready
                wait = MAX_WAIT if wake_at is None else (wake_at - now).total_seconds()
                self._cond.wait(min(max(wait, 0.0), MAX_WAIT))
            return None

    def _ready(self, now: datetime) -> tuple[list[tuple[str, datetime]], datetime | None]:
        """Take the instants whose hand-over time has come (with ``_cond`` held): their
        fires, in instant order, and when the next hand-over is due."""
        heap = self._instants
        while heap and heap[0] not in self._due:  # handed over earlier, out of order
            heapq.heappop(heap)
        if not heap:
            return [], None
        # Only instants within the longest lead of the first can be due before it: taken off
        # the heap in order, those not handed over now put back.
        horizon = heap[0] + MOST_AHEAD
        window: list[datetime] = []
        while heap and heap[0] <= horizon:
            instant = heapq.heappop(heap)
            if instant in self._due and (not window or window[-1] != instant):
                window.append(instant)
        ready: list[tuple[str, datetime]] = []
        wake_at: datetime | None = None
        for instant in window:
            at = instant - self._pace.lead(len(self._due[instant]))
            if at <= now:
                ready += [(job, instant) for job in self._due.pop(instant)]
            else:
                heapq.heappush(heap, instant)
                wake_at = at if wake_at is None else min(wake_at, at)
        return ready, wake_at

    def _hand_over(self, fires: list[tuple[str, datetime]]) -> None:
        """Hand ``fires`` over, then compute their jobs' next instants: off the burst's
        critical path (also when the hand-over raised)."""
        try:
            self._handover(fires)
        finally:
            with self._cond:
                for job, instant in fires:
                    if self._next.get(job) == instant:
                        trigger = self._triggers[job]
                        self._schedule(job, trigger.get_next_fire_time(instant, instant))
