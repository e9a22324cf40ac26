"""Two small threads that turn fires handed over one by one into batches.

The fire loop hands an instant's fires over together, but each reaches the claims through its
job's lane, one call per fire (a lane holds a fire back while its previous one is in
flight), and settling and catch-up hand fires in at any time. Claiming each on its own costs
a round trip per fire (issue 13). Instead:

* :class:`Gatherer` collects what arrives within a short window (until nothing new came
  for :data:`QUIET` seconds, at most :data:`LONGEST` after the first, at most
  :data:`MOST` items) and hands the batch to one handler: the claims layer claims it in
  one call;
* :class:`Timetable` keeps each claimed batch until its instant and hands every batch due
  then to one handler together: the claims layer starts them in one call.

Both run their handler on their own single thread, in order; a handler that raises is
logged (``batch_failed``) and the thread goes on. Neither reads the lease: the handlers do.
The windows are timed on the real monotonic clock (batching, not lease logic).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Generic, TypeVar

from scheduler.clock import Clock

T = TypeVar("T")

#: Seconds without a new item after which a batch is handed over (the lanes hand the fires
#: of one instant over back to back, microseconds apart).
QUIET = 0.002
#: Seconds after a batch's first item at which it is handed over anyway: a long stream of
#: fires is claimed in slices, not held until it ends (claims are made ahead of the instant
#: by ``CLAIM_AHEAD``, 100 ms: a slice must leave room for its round trip).
LONGEST = 0.025
#: The most items in one batch (a backend splits it further if it must).
MOST = 2000


class HandlerThread(Generic[T]):
    """One thread that takes the next list of items and hands it to ``handle``, in order.

    The part :class:`Gatherer` and :class:`Timetable` share; each says in :meth:`_take`
    when its next list is ready (``None``: stopped).

    Args:
        name: the thread's name.
        handle: called with each list on this thread; it owns every item it is given
            (whatever it raises, no item is handed out again).
        log: the runner's logger (``batch_failed`` if ``handle`` raises).
    """

    def __init__(self, name: str, handle: Callable[[list[T]], None], log: Any) -> None:
        self._handle = handle
        self._log = log
        self._cond = threading.Condition()
        self._stopped = False
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread (if not yet: the first item handed in starts it too)."""
        with self._cond:
            self._start_locked()

    def _start_locked(self) -> None:
        if self.thread.ident is None:
            self.thread.start()

    def _take(self) -> list[T] | None:
        raise NotImplementedError

    def _loop(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            try:
                self._handle(items)
            except BaseException:  # the handler settles its items; the thread goes on
                self._log.exception("batch_failed", thread=self.thread.name, items=len(items))


class Gatherer(HandlerThread[T]):
    """Collects items from any thread into batches for one handler thread.

    Args:
        name: the thread's name.
        handle: called with each batch, in order, on the gatherer's thread; it owns every
            item it is given (whatever it raises, no item is handed out again).
        log: the runner's logger (``batch_failed`` if ``handle`` raises).
        quiet: see :data:`QUIET`.
        longest: see :data:`LONGEST`.
        most: see :data:`MOST`.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[list[T]], None],
        log: Any,
        *,
        quiet: float = QUIET,
        longest: float = LONGEST,
        most: int = MOST,
    ) -> None:
        super().__init__(name, handle, log)
        self._quiet = quiet
        self._longest = longest
        self._most = most
        self._items: list[T] = []
        self._last_put = 0.0

    def put(self, item: T) -> None:
        """Queue ``item`` for the next batch.

        Raises:
            RuntimeError: the gatherer was stopped (nobody will handle it).
        """
        with self._cond:
            if self._stopped:
                raise RuntimeError("gatherer stopped")
            self._start_locked()
            self._items.append(item)
            self._last_put = time.monotonic()
            if len(self._items) == 1 or len(self._items) >= self._most:
                self._cond.notify()

    def stop(self) -> list[T]:
        """Stop the thread after its current batch; the items not handed over yet."""
        with self._cond:
            self._stopped = True
            left, self._items = self._items, []
            self._cond.notify()
        return left

    def _take(self) -> list[T] | None:
        with self._cond:
            while not self._items and not self._stopped:
                self._cond.wait()
            if self._stopped:
                return None
            first = time.monotonic()
            while len(self._items) < self._most and not self._stopped:
                now = time.monotonic()
                left = min(first + self._longest, self._last_put + self._quiet) - now
                if left <= 0:
                    break
                self._cond.wait(left)
            batch, self._items = self._items[: self._most], self._items[self._most :]
            return batch


class Timetable(HandlerThread[T]):
    """Holds batches until their instant, then hands every batch due to one handler call.

    Args:
        name: the thread's name.
        handle: called on the timetable's thread with the items of every batch whose
            instant has come (in instant order); it owns them.
        clock: the wall clock instants are read on.
        log: the runner's logger (``batch_failed`` if ``handle`` raises).
    """

    def __init__(
        self, name: str, handle: Callable[[list[T]], None], clock: Clock, log: Any
    ) -> None:
        super().__init__(name, handle, log)
        self._clock = clock
        self._heap: list[tuple[datetime, int, list[T]]] = []
        self._order = itertools.count()
        self._now_all = False  # hand everything over at once (the replica stops firing)

    def add(self, at: datetime, items: list[T]) -> None:
        """Hand ``items`` over at ``at`` (at once if it has passed).

        Raises:
            RuntimeError: the timetable was stopped (nobody will handle them).
        """
        if not items:
            return
        with self._cond:
            if self._stopped:
                raise RuntimeError("timetable stopped")
            self._start_locked()
            heapq.heappush(self._heap, (at, next(self._order), items))
            if self._heap[0][2] is items:
                self._cond.notify()

    def hurry(self) -> None:
        """Hand every batch over now, whatever its instant (the replica stops firing)."""
        with self._cond:
            self._now_all = True
            self._cond.notify()

    def stop(self) -> list[T]:
        """Stop the thread after its current hand-over; the items not handed over yet."""
        with self._cond:
            self._stopped = True
            left = [item for _, _, items in sorted(self._heap) for item in items]
            self._heap = []
            self._cond.notify()
        return left

    def _take(self) -> list[T] | None:
        with self._cond:
            while True:
                if self._stopped:
                    return None
                if self._heap:
                    wait = (self._heap[0][0] - self._clock.now()).total_seconds()
                    if wait <= 0 or self._now_all:
                        break
                    self._cond.wait(wait)
                else:
                    self._cond.wait()
            now = self._clock.now()
            due: list[T] = []
            while self._heap and (self._now_all or self._heap[0][0] <= now):
                due.extend(heapq.heappop(self._heap)[2])
            return due
