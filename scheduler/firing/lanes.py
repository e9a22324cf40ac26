"""Lanes: one serial queue of fires per job, so a job never overlaps itself on a replica.

A lane is a queue, not a thread. It hands one fire at a time to the runner (``dispatch``):
the runner claims it with the other fires due then, starts it at its instant and runs it on
a worker of the bounded job pool, and calls :meth:`Lane.done` when that fire is over (run
or not). Only then does the lane hand over its next fire. So however many jobs a replica
has, its threads are the pool's, and a job never runs twice at once.

A fire arriving while the lane has one in flight waits its turn, coalesced to the newest
one unless ``catch_up="all"`` (a claim already made is never coalesced away). A fire
coalesced away is reported (``skipped``, :attr:`~scheduler.firing.tally.SkipReason.COALESCED`),
never dropped silently.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from scheduler.backends.runs import RunRecord
from scheduler.firing.tally import SkipReason
from scheduler.jobs.context import JobContext
from scheduler.jobs.spec import JobSpec


class Idleness:
    """Wakes whoever waits for a lane to go idle: one condition for all of a runner's lanes.

    Why not an ``Event`` per lane: with its condition, lock and waiter queue it cost ~1 KiB
    a lane, 10 MiB at 10,000 jobs (issue 13); lanes flip idle and busy rarely enough (twice
    a fire) for one shared condition.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()

    def changed(self) -> None:
        """A lane went idle or busy."""
        with self._cond:
            self._cond.notify_all()

    def wait(self, idle: Callable[[], bool], timeout: float | None) -> bool:
        """Wait until ``idle()`` or ``timeout`` seconds; whether it became true."""
        with self._cond:
            return self._cond.wait_for(idle, timeout)


class LaneIdle:
    """``Lane.idle``: set while the lane has no fire queued or in flight (the reading side
    of an ``Event``)."""

    __slots__ = ("_lane",)

    def __init__(self, lane: Lane) -> None:
        self._lane = lane

    def is_set(self) -> bool:
        return self._lane._idle_now

    def wait(self, timeout: float | None = None) -> bool:
        return self._lane._idleness.wait(self.is_set, timeout)


class Lane:
    """The serial queue of fires for one job on this replica (slotted: one per job).

    Args:
        spec: the job.
        dispatch: takes the lane's next fire (``dispatch(lane, fire)``); must not block.
            If it raises ``RuntimeError`` (the runner is closing), the lane drops what it
            holds and goes idle.
        skipped: told of fires the lane drops (``skipped(lane, fires, reason)``):
            coalesced away, or dropped because the replica stops firing.
        accepting: whether fires may still start (false once the replica stops firing:
            the lane then drops what it holds and goes idle).
        idleness: shared by a runner's lanes (:class:`Idleness`); a lane of its own when
            not given.
    """

    __slots__ = (
        "_accepting",
        "_busy",
        "_dispatch",
        "_idle_now",
        "_idleness",
        "_kept",
        "_lock",
        "_pending",
        "_skipped",
        "active",
        "active_ctx",
        "idle",
        "spec",
    )

    def __init__(
        self,
        spec: JobSpec,
        dispatch: Callable[[Lane, datetime], None],
        skipped: Callable[[Lane, list[datetime], SkipReason], None],
        accepting: Callable[[], bool],
        idleness: Idleness | None = None,
    ) -> None:
        self.spec = spec
        self._dispatch = dispatch
        self._skipped = skipped
        self._accepting = accepting
        self._lock = threading.Lock()
        self._pending: list[datetime] = []
        # Claims already made: never coalesced away. Rare, so an immutable set, replaced on
        # change (an empty set per lane is 216 bytes: 2 MiB at 10,000 jobs).
        self._kept: frozenset[datetime] = frozenset()
        self._busy = False  # a fire is in flight (claimed, waiting for its start, running)
        self._idleness = idleness or Idleness()
        self._idle_now = True
        #: Set while no fire is queued or in flight.
        self.idle = LaneIdle(self)
        #: The run in progress and its context (``None`` between runs).
        self.active: RunRecord | None = None
        self.active_ctx: JobContext | None = None

    @property
    def pending(self) -> list[datetime]:
        """The fires waiting their turn, oldest first (a copy)."""
        with self._lock:
            return list(self._pending)

    def submit(self, fires: Sequence[datetime], keep: bool = False) -> None:
        """Queue ``fires`` (deduplicated, in order); hand one over if none is in flight.

        ``keep``: the fires are claims already made (see :mod:`scheduler.firing.recovery`),
        run even where the job's policy coalesces a backlog to its newest fire.
        """
        with self._lock:
            incoming = {f.astimezone(UTC) for f in fires}
            if keep:
                self._kept = self._kept | incoming
            merged = sorted(set(self._pending) | incoming)
            dropped: list[datetime] = []
            if self.spec.catch_up != "all" and len(merged) > 1:
                newest = merged[-1]
                kept = [f for f in merged if f == newest or f in self._kept]
                dropped = [f for f in merged if f != newest and f not in self._kept]
                merged = kept
            self._pending = merged
            fire, stopped = (None, []) if self._busy else self._take()
        if dropped:
            self._skipped(self, dropped, SkipReason.COALESCED)
        self._after(fire, stopped)

    def done(self) -> None:
        """The fire in flight is over (run, or not run): hand over the next one, or go idle."""
        with self._lock:
            self.active, self.active_ctx = None, None
            fire, stopped = self._take()
        self._after(fire, stopped)

    def drop_pending(self) -> list[datetime]:
        """Forget the queued fires (one in flight goes on); the fires dropped."""
        with self._lock:
            dropped, self._pending = self._pending, []
            self._kept = frozenset()
            if not self._busy:
                self._set_idle(True)
        return dropped

    def _take(self) -> tuple[datetime | None, list[datetime]]:
        """The next fire to hand over, marking the lane busy; or ``None``, marking it idle
        (with ``_lock`` held). Not accepting: what is queued is dropped (returned second)."""
        if self._pending and self._accepting():
            fire = self._pending.pop(0)
            if fire in self._kept:
                self._kept = self._kept - {fire}
            self._busy = True
            self._set_idle(False)
            return fire, []
        dropped, self._pending = self._pending, []
        self._kept = frozenset()
        self._busy = False
        self._set_idle(True)
        return None, dropped

    def _set_idle(self, idle: bool) -> None:
        if idle != self._idle_now:
            self._idle_now = idle
            self._idleness.changed()

    def _after(self, fire: datetime | None, stopped: list[datetime]) -> None:
        """Outside the lock: report what was dropped, hand over ``fire``."""
        if stopped:
            self._skipped(self, stopped, SkipReason.SHUTDOWN)
        if fire is None:
            return
        try:
            self._dispatch(self, fire)
        except RuntimeError:  # the runner is closing: nobody will take it
            with self._lock:
                dropped = [fire, *self._pending]
                self._pending = []
                self._kept = frozenset()
                self._busy = False
                self._set_idle(True)
            self._skipped(self, dropped, SkipReason.SHUTDOWN)
