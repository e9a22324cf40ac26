"""Module-level functions run in child processes by the isolation tests.

BATON_TEST_PIDFILE: where each child writes its pid when it starts.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from scheduler import JobContext


def _note_pid() -> None:
    Path(os.environ["BATON_TEST_PIDFILE"]).write_text(str(os.getpid()))


def ok_job(ctx: JobContext) -> None:
    _note_pid()
    ctx.check()


def failing_job(ctx: JobContext) -> None:
    _note_pid()
    raise RuntimeError("boom in the child")


def cooperative_job(ctx: JobContext) -> None:
    """Checks ctx regularly: ends with LeadershipLost when told."""
    _note_pid()
    while True:
        ctx.check()
        time.sleep(0.01)


def stubborn_job(ctx: JobContext) -> None:
    """Ignores ctx.lost and swallows the SIGTERM-raised exception: only SIGKILL ends it."""
    _note_pid()
    while True:
        try:  # noqa: SIM105  (spelled out: this job swallows SIGTERM on purpose)
            time.sleep(0.01)
        except BaseException:
            pass


def exiting_job(ctx: JobContext) -> None:
    """Ends its process's main thread the way a script would."""
    _note_pid()
    raise SystemExit()


def interrupted_job(ctx: JobContext) -> None:
    _note_pid()
    raise KeyboardInterrupt
