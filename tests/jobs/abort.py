"""Jobs and hooks for the abort scenarios: a process-isolated job that ignores ctx.lost,
leadership hooks (one of them failing) and a job on_lost hook, all writing to the sink."""

from __future__ import annotations

import os
import time

from scheduler import (
    JobContext,
    LeadershipAcquiredEvent,
    LeadershipLostEvent,
    on_leadership_acquired,
    on_leadership_lost,
    singleton_job,
)
from tests.harness.sink import env_sink as sink


@on_leadership_acquired
def note_acquired(event: LeadershipAcquiredEvent) -> None:
    sink().write("hooks", event.token, phase="acquired", replica=event.replica_id)


@on_leadership_lost
def failing_hook(event: LeadershipLostEvent) -> None:
    raise RuntimeError("a hook that fails must not stop the others")


@on_leadership_lost
def note_lost(event: LeadershipLostEvent) -> None:
    sink().write("hooks", event.token, phase="lost", replica=event.replica_id, note=event.reason)


def note_job_lost(ctx: JobContext) -> None:
    sink().write(
        "hooks",
        ctx.fencing_token,
        phase="job_on_lost",
        job=ctx.job,
        tick=ctx.scheduled_time.isoformat(),
    )


@singleton_job(
    every="2s", name="abort.stubborn", isolation="process", on_lost=note_job_lost, catch_up="none"
)
def stubborn(ctx: JobContext) -> None:
    """Writes its pid, then ignores ctx.lost and swallows SIGTERM: only SIGKILL ends it."""
    sink().write(
        "ledger",
        ctx.fencing_token,
        phase="start",
        job=ctx.job,
        tick=ctx.scheduled_time.isoformat(),
        replica=ctx.replica_id,
        pid=os.getpid(),
    )
    while True:
        try:  # noqa: SIM105  (spelled out: this job swallows SIGTERM on purpose)
            time.sleep(0.01)
        except BaseException:
            pass
