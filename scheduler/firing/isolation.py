"""``isolation="process"``: run a job in a child process that cannot outlive the lease.

A thread cannot be stopped from outside; a process can. The parent sends SIGTERM when the
term ends (the child turns it into ``LeadershipLost`` so ``finally`` blocks run), then
SIGKILL after a short grace. The child also guards itself: a watchdog thread in it ends the
process at the lease's local deadline, which it reads from shared memory the parent updates
on every renewal — so even if the *parent* is paused (SIGSTOP, a frozen VM), the child is
gone before another replica can take over. Deadlines are ``CLOCK_MONOTONIC`` readings, which
are the same in every process of a Linux host.

Children are started with the ``spawn`` method (a fresh interpreter that imports the job's
module by name), so a job in process isolation must be a module-level function.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection, wait
from typing import Any, Literal

from scheduler.clock import SYSTEM_CLOCK
from scheduler.errors import LeadershipLost
from scheduler.jobs.context import JobContext

#: Exit status of a child that ended itself at the lease deadline.
EXIT_DEADLINE = 86
#: Seconds before the lease deadline at which the child ends itself (safety margin for the
#: time the kernel needs to deliver the kill).
CHILD_MARGIN = 0.05

ChildOutcome = Literal["ok", "error", "lost"]


@dataclass(frozen=True, slots=True)
class ChildResult:
    """How a child run ended."""

    outcome: ChildOutcome
    message: str = ""


class _SharedLost:
    """The child's view of ``ctx.lost``: a multiprocessing event, set by the parent."""

    def __init__(self, event: Any) -> None:
        self._event = event

    def is_set(self) -> bool:
        return bool(self._event.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        return bool(self._event.wait(timeout))

    def set(self) -> None:
        self._event.set()


def _child_main(
    module: str,
    qualname: str,
    job: str,
    scheduled: str,
    token: int,
    replica_id: str,
    lost: Any,
    deadline: Any,
    results: Connection,
) -> None:
    """Entry point of the child: guard the deadline, run the function, report the outcome."""

    def on_term(signum: int, frame: object) -> None:
        raise LeadershipLost(job, "aborted: leadership lost (SIGTERM from the replica)")

    signal.signal(signal.SIGTERM, on_term)

    def guard() -> None:
        while True:
            left = deadline.value - time.monotonic() - CHILD_MARGIN
            if left <= 0:
                os._exit(EXIT_DEADLINE)
            time.sleep(min(left, 0.05))

    try:
        # Everything after the handler, the import too: an abort (SIGTERM) or a failure while
        # the child still starts is an outcome, not a traceback on the replica's stderr (seen
        # in chaos runs: the term ended while a spawned child was importing, and while it was
        # starting its deadline guard).
        threading.Thread(target=guard, name="baton-deadline", daemon=True).start()
        ctx = JobContext(
            job=job,
            scheduled_time=datetime.fromisoformat(scheduled),
            fencing_token=token,
            replica_id=replica_id,
            lost=_SharedLost(lost),  # type: ignore[arg-type]  # duck-typed threading.Event
            _deadline=lambda: float(deadline.value),
            _clock=SYSTEM_CLOCK,
        )
        func: Any = importlib.import_module(module)
        for part in qualname.split("."):
            func = getattr(func, part)
        func(ctx)
    except LeadershipLost as exc:
        outcome = ("lost", str(exc))
    except BaseException as exc:  # report everything; the parent decides what it means
        # As scheduler.firing.execution.describe_error: ``Type: text``, or ``Type`` (sys.exit()).
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        outcome = ("error", text)
    else:
        outcome = ("ok", "")
    with contextlib.suppress(OSError):  # the replica is gone (kill -9): nobody to tell
        results.send(outcome)


def run_in_child(
    func: Callable[..., object],
    ctx: JobContext,
    abort_grace: float,
    poll: float = 0.05,
) -> ChildResult:
    """Run ``func(ctx)`` in a spawned child and wait for it, aborting it on leadership loss.

    Args:
        func: a module-level function.
        ctx: the parent's context; its ``lost`` event and deadline drive the abort.
        abort_grace: seconds between SIGTERM and SIGKILL.
        poll: seconds between deadline refreshes while waiting.
    """
    mp = multiprocessing.get_context("spawn")
    lost = mp.Event()
    deadline = mp.Value("d", ctx._deadline())
    receiver, sender = mp.Pipe(duplex=False)
    child = mp.Process(
        target=_child_main,
        args=(
            func.__module__,
            func.__qualname__,
            ctx.job,
            ctx.scheduled_time.isoformat(),
            ctx.fencing_token,
            ctx.replica_id,
            lost,
            deadline,
            sender,
        ),
        name=f"baton-job-{ctx.job}",
        daemon=True,
    )
    child.start()
    sender.close()
    aborted_at: float | None = None
    while True:
        ready = wait([receiver, child.sentinel], timeout=poll)
        if receiver in ready:
            try:
                outcome, message = receiver.recv()
            except EOFError:
                outcome, message = None, ""
            child.join()
            if outcome is not None:
                return ChildResult(outcome, message)
            break
        if child.sentinel in ready:
            child.join()
            break
        if not ctx.lost.is_set():
            # An ended term reports -inf; the child keeps the last real deadline so that
            # SIGTERM, not the deadline guard, ends it first.
            deadline.value = ctx._deadline()
        elif aborted_at is None:
            lost.set()
            aborted_at = time.monotonic()
            child.terminate()  # SIGTERM: the child raises LeadershipLost
        elif aborted_at is not None and time.monotonic() - aborted_at > abort_grace:
            child.kill()
    receiver.close()
    code = child.exitcode
    if aborted_at is not None or code in (EXIT_DEADLINE, -signal.SIGKILL, -signal.SIGTERM):
        return ChildResult("lost", f"job process ended by the replica (exit status {code})")
    return ChildResult("error", f"job process exited with status {code}")
