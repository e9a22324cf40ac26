"""Many interval jobs that all fall due at the same instant, for the scale benchmark (issue 13).

Configured by environment, read when the replica loads its jobs:

BATON_SCALE_JOBS   how many jobs, named ``scale.j00000``, ``scale.j00001``, ... (default 1)
BATON_SCALE_EVERY  their common interval (default ``10s``); instants are multiples of it since
                   the epoch, so every job falls due at the same instant
BATON_SCALE_CATCH_UP  their ``catch_up`` (default ``none``: a fire not run at its tick is
                   not run later, as with bare APScheduler)
BATON_SCALE_OUT    a directory: each process appends ``job,scheduled,started`` lines (Unix
                   seconds) to ``<replica id>.csv`` in it (unset: the jobs do nothing)

A run costs one ``time.time()`` and one line written under a process-wide lock, so the
benchmark measures the scheduler, not the job.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TextIO

from scheduler import JobContext, singleton_job

JOBS = int(os.environ.get("BATON_SCALE_JOBS", "1"))
EVERY = os.environ.get("BATON_SCALE_EVERY", "10s")
CATCH_UP = os.environ.get("BATON_SCALE_CATCH_UP", "none")

_lock = threading.Lock()


def _open_sink() -> TextIO | None:
    directory = os.environ.get("BATON_SCALE_OUT")
    if not directory:
        return None
    owner = os.environ.get("BATON_REPLICA_ID") or str(os.getpid())
    # Line-buffered: every run reaches the file at once, also if the process is killed.
    return open(Path(directory) / f"{owner}.csv", "a", buffering=1, encoding="utf-8")


_sink = _open_sink()


def job_name(index: int) -> str:
    """The name of job number ``index``."""
    return f"scale.j{index:05d}"


def _record(ctx: JobContext, started: float) -> None:
    if _sink is None:
        return
    line = f"{ctx.job},{ctx.scheduled_time.timestamp():.3f},{started:.6f}\n"
    with _lock:
        _sink.write(line)


def _define(index: int) -> None:
    # One function object per job: @singleton_job refuses to decorate a function twice.
    def fire(ctx: JobContext) -> None:
        _record(ctx, time.time())

    singleton_job(every=EVERY, name=job_name(index), catch_up=CATCH_UP)(fire)


for _index in range(JOBS):
    _define(_index)
