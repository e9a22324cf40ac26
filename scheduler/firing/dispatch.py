"""From a lane's fire to a started run, in batches: claimed together, started together.

:class:`Dispatch` is what a lane hands its fires to (:meth:`Dispatch.put`, and
:meth:`Dispatch.skipped` for the fires it drops). The fires arriving together (every job due
at one instant) are gathered (:class:`~scheduler.firing.batching.Gatherer`, one thread) and
claimed by the claims layer in one backend call, ahead of their instant; each claimed batch
waits in the timetable (:class:`~scheduler.firing.batching.Timetable`, one thread) until its
instant and is started there in one call (fenced by the lease); each started fire goes to
the job pool (:class:`~scheduler.firing.execution.Execution`). Every lane whose fire does not
reach the pool is freed (:meth:`~scheduler.firing.lanes.Lane.done`), whatever happens.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.backends.runs import RunRecord
from scheduler.clock import Clock
from scheduler.firing.batching import Gatherer, Timetable
from scheduler.firing.claims import Claims, Fire
from scheduler.firing.execution import Execution
from scheduler.firing.fireloop import Pace
from scheduler.firing.lanes import Lane
from scheduler.firing.tally import SkipReason
from scheduler.leadership.term import Term
from scheduler.leadership.view import Leadership

__all__ = ["START_BACKLOG", "START_SLICE", "STOP_WAIT", "Claimed", "Dispatch"]

#: Claims started in one call at their instant: the first slice's jobs run while the next
#: slice is started, instead of every job of a burst of 10,000 waiting for all its starts.
START_SLICE = 500
#: A slice is started once fewer than this many started fires wait for a worker: a fire is
#: started (in the backend) only shortly before a worker can call its job, so a replica
#: told to stop mid-burst has few started fires it must record ``lost``; the rest are
#: still claims, given back for the next leader to run.
START_BACKLOG = START_SLICE // 2
#: Seconds :meth:`Dispatch.stop` waits for a batch in progress (the start of one slice).
STOP_WAIT = 5.0


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed fire waiting for its instant: its lane, its claim, the term it is of."""

    lane: Lane
    run: RunRecord
    term: Term


class Dispatch:
    """Claims the fires lanes hand over, in batches, and starts them at their instants.

    Args:
        claims: the claims layer (claims, starts, give-backs).
        leadership: the term this replica leads.
        execution: where started fires run.
        accepting: whether fires may still start (false once the replica stops firing).
        clock: wall clock for the timetable's instants.
        log: the runner's logger.
        pace: told how long each claim batch took (the fire loop's lead).
    """

    def __init__(
        self,
        claims: Claims,
        leadership: Leadership,
        execution: Execution,
        accepting: Callable[[], bool],
        clock: Clock,
        log: Any,
        pace: Pace | None = None,
    ) -> None:
        self._claims = claims
        self._pace = pace or Pace()
        self._leadership = leadership
        self._execution = execution
        self._accepting = accepting
        self._log = log
        #: Claim nothing while set (a graceful resign is under way).
        self.held = False
        self._intake: Gatherer[tuple[Lane, datetime]] = Gatherer(
            "baton-claims", self._claim_batch, log
        )
        self._starts: Timetable[Claimed] = Timetable("baton-starts", self._start_batch, clock, log)

    def start(self) -> None:
        """Start the claim and start threads."""
        self._intake.start()
        self._starts.start()

    def threads(self) -> dict[str, threading.Thread]:
        """The claim and start threads by role (``claims``, ``starts``), once started."""
        found = {"claims": self._intake.thread, "starts": self._starts.thread}
        return {role: thread for role, thread in found.items() if thread.ident is not None}

    def put(self, lane: Lane, fire: datetime) -> None:
        """A lane's next fire: gathered with the others arriving now, to be claimed."""
        self._intake.put((lane, fire))

    def skipped(self, lane: Lane, fires: list[datetime], reason: SkipReason) -> None:
        """A lane dropped ``fires`` (coalesced away, or the replica stops firing)."""
        for fire in fires:
            self._log.debug(
                "fire_coalesced" if reason is SkipReason.COALESCED else "fire_dropped",
                job=lane.spec.name,
                scheduled_time=fire.isoformat(),
                reason=reason.value,
            )
        self._claims.tally.skipped(reason, [lane.spec.name] * len(fires))

    def hurry(self) -> None:
        """Hand over every claimed batch now, whatever its instant (the replica stops
        firing: they are abandoned)."""
        self._starts.hurry()

    def stop(self, timeout: float = STOP_WAIT) -> None:
        """Stop both threads: fires gathered for a claim free their lanes; claims waiting
        for their instant are given back (once settled) and free theirs. Waits up to
        ``timeout`` seconds for a batch in progress, so that what it abandons is given back
        with the rest (the caller withdraws every claim in doubt next)."""
        for lane, _ in self._intake.stop():
            lane.done()
        by_term: dict[Term, list[RunRecord]] = defaultdict(list)
        for item in self._starts.stop():
            by_term[item.term].append(item.run)
            item.lane.done()
        for term, runs in by_term.items():
            self._claims.abandon(runs, term)
        self._execution.wake()  # a start slice waiting for the pool stops waiting
        deadline = time.monotonic() + timeout
        for thread in self.threads().values():
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _claim_batch(self, items: list[tuple[Lane, datetime]]) -> None:
        """Claim the fires gathered together (one backend call per retention), and put the
        claims on the timetable for their instants. Every lane whose fire is not claimed is
        freed (:meth:`Lane.done`), whatever happens."""
        free = items  # the lanes to free: all of them unless their claim is handed on
        try:
            if not self._accepting():
                self._claims.tally.skipped(
                    SkipReason.SHUTDOWN, [lane.spec.name for lane, _ in items]
                )
                return
            term = self._leadership.current_term()
            fires = [Fire(lane.spec.name, at) for lane, at in items]
            sent = time.monotonic()
            answers = self._claims.claim(fires, term, held=self.held)
            if term is None:
                return
            self._pace.record(time.monotonic() - sent, len(fires))
            by_instant: dict[datetime, list[Claimed]] = defaultdict(list)
            free = []
            for (lane, at), run in zip(items, answers, strict=True):
                if run is None:
                    free.append((lane, at))
                else:
                    by_instant[run.scheduled_time].append(Claimed(lane, run, term))
            for instant, claimed in by_instant.items():
                try:
                    self._starts.add(instant, claimed)
                except RuntimeError:  # the timetable is stopped (closing): given back
                    self._claims.abandon([item.run for item in claimed], term)
                    free += [(item.lane, instant) for item in claimed]
        finally:
            for lane, _ in free:
                lane.done()

    def _start_batch(self, due: list[Claimed]) -> None:
        """Start the claims whose instant has come (one backend call per term and
        :data:`START_SLICE`) and hand each started fire to the job pool. Every lane whose
        fire does not run is freed."""
        by_term: dict[Term, list[Claimed]] = defaultdict(list)
        for item in due:
            by_term[item.term].append(item)
        for term, group in by_term.items():
            for first in range(0, len(group), START_SLICE):
                self._start_slice(term, group[first : first + START_SLICE])

    def _start_slice(self, term: Term, group: list[Claimed]) -> None:
        """Start ``group`` (claims of ``term``) in one call and hand each started fire to the
        job pool; every lane whose fire does not run is freed."""
        submitted = 0
        try:
            runs = [item.run for item in group]

            def over() -> bool:
                return not self._accepting() or self._leadership.current_term() is not term

            self._execution.wait_backlog(START_BACKLOG, over)
            if over():
                # Lost (or stalled) between the claim and the instant, or stopping: not run
                # (at most once); given back once settled.
                self._claims.abandon(runs, term)
                return
            started = self._claims.start_many(runs, term)
            for item, run in zip(group, started, strict=True):
                if run is None:
                    item.lane.done()
                else:
                    self._execution.submit(item.lane, run, term)
                submitted += 1
        finally:
            for item in group[submitted:]:
                item.lane.done()
