"""``async def`` jobs: each run is a task on an event loop, cancelled when its term ends.

A coroutine job keeps the shape of every other run: its lane hands one fire at a time to a
worker of the bounded job pool, and that worker owns the run from the claim to the outcome.
For a coroutine the worker does not call the function itself: it schedules the task on the
event loop (``loop.call_soon_threadsafe``, never blocking the loop) and waits, off the loop,
for it to end. So the loop only ever runs the jobs' own code; claims, starts and outcomes
stay on Baton's threads, and ``max_workers`` still bounds how many jobs run at once.

The loop is the host application's when Baton is embedded in an ASGI app (the lifespan's
running loop, or ``BatonReplica(loop=...)``), else Baton's own: one daemon thread running
``loop.run_forever()``, started with the runner when a job is ``async def``.

When the run's term ends (leadership lost, the lease's renew deadline passed, a graceful
shutdown once ``shutdown_grace`` is spent) the task is cancelled: ``CancelledError`` is
raised at its current ``await``, so ``finally`` blocks and ``async with`` exits run, and the
run is recorded ``lost``. A coroutine that swallows the cancellation keeps running, as a
thread job that ignores ``ctx.lost`` does (use ``isolation="process"`` for a hard stop of
blocking code; it takes plain functions only).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from scheduler.errors import LeadershipLost
from scheduler.jobs.context import JobContext
from scheduler.leadership.term import Term

#: Seconds between looks, while a worker waits for a task, at whether its loop still runs
#: (a host application that stopped its loop would otherwise hold the worker for ever).
LOOP_CHECK = 0.5
#: Seconds to wait for Baton's own loop thread to stop on close.
CLOSE_TIMEOUT = 2.0


class LoopGone(RuntimeError):
    """The event loop of ``async def`` jobs stopped or closed before the task ended."""


class LoopThread:
    """Baton's own event loop for ``async def`` jobs: one daemon thread, started on demand."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="baton-async", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        """Cancel what still runs, stop the loop and close it (bounded)."""
        if not self.thread.is_alive():
            return

        def stop() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.call_soon(self.loop.stop)  # after the cancellations are delivered

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(CLOSE_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()


class Coroutines:
    """Runs ``async def`` jobs on an event loop for the job pool's workers.

    Args:
        loop: the host application's running loop; ``None``: Baton's own loop thread,
            started by :meth:`start`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._own = None if loop is not None else LoopThread()
        self.loop = loop if loop is not None else self._own.loop  # type: ignore[union-attr]

    def start(self) -> None:
        if self._own is not None and self._own.thread.ident is None:
            self._own.start()

    def problem(self) -> str | None:
        """Why ``async def`` jobs can no longer run (/healthz), or ``None``."""
        if self._own is not None and self._own.thread.ident is not None:
            if not self._own.thread.is_alive():
                return "the event loop thread of async jobs died"
        elif self.loop.is_closed():
            return "the event loop of async jobs is closed"
        return None

    def close(self) -> None:
        if self._own is not None:
            self._own.close()

    def run(
        self,
        func: Callable[[JobContext], Coroutine[Any, Any, object]],
        ctx: JobContext,
        term: Term,
    ) -> None:
        """Run ``func(ctx)`` as a task on the loop and wait (on this worker) for it to end.

        Raises:
            LeadershipLost: the term ended and the task was cancelled (its ``finally``
                blocks have run), or the job raised it (``ctx.check()``).
            LoopGone: the loop stopped or closed before the task ended.
            BaseException: whatever else the job raised (``CancelledError`` included when
                something other than Baton cancelled it).
        """
        loop = self.loop
        done = threading.Event()
        box: dict[str, asyncio.Task[object]] = {}
        failed: list[BaseException] = []
        cancelled = threading.Event()

        def create() -> None:  # on the loop: schedule the task, nothing more
            try:
                task = loop.create_task(func(ctx), name=f"baton-job:{ctx.job}")
            except BaseException as exc:  # func(ctx) raised before returning a coroutine
                failed.append(exc)
                done.set()
                return
            task.add_done_callback(lambda _: done.set())
            box["task"] = task
            if term.lost.is_set():  # ended before the task could start: it never does
                cancel()

        def cancel() -> None:  # on the loop
            task = box.get("task")
            if task is not None and not task.done():
                cancelled.set()
                task.cancel(f"leadership lost ({term.reason or 'term ended'})")

        def on_end() -> None:  # on the thread that ended the term: must not block
            if not loop.is_closed():
                loop.call_soon_threadsafe(cancel)

        try:
            loop.call_soon_threadsafe(create)
        except RuntimeError as exc:  # closed
            raise LoopGone("the event loop of async jobs is closed") from exc
        remove = term.on_end(on_end)  # after create: the loop runs them in this order
        try:
            while not done.wait(LOOP_CHECK):
                if loop.is_closed() or not loop.is_running():
                    raise LoopGone("the event loop of async jobs stopped before the job ended")
        finally:
            remove()
        if failed:
            raise failed[0]
        task = box["task"]
        if task.cancelled():
            if cancelled.is_set():
                raise LeadershipLost(ctx.job, term.reason or "lease lost")
            raise asyncio.CancelledError()
        failure = task.exception()
        if failure is not None:
            raise failure
