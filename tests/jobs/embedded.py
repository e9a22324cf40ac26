"""Jobs of the embedding tests (tests/integrations/test_embed.py): one plain and one
``async def`` job, each writing every tick it runs to the fenced sink, and a job that fails
(the status page's red row).

BATON_TEST_SINK   path of the fenced sink (tests.harness.sink)
BATON_TEST_EVERY  interval of both ticking jobs (default 1s)
"""

from __future__ import annotations

import asyncio
import os
import threading

from scheduler import JobContext, singleton_job
from tests.harness.sink import env_sink as sink

EVERY = os.environ.get("BATON_TEST_EVERY", "1s")


def _write(ctx: JobContext, note: str) -> None:
    sink().write(
        "ledger",
        ctx.fencing_token,
        job=ctx.job,
        tick=ctx.scheduled_time.isoformat(),
        replica=ctx.replica_id,
        pid=os.getpid(),
        phase="run",
        note=note,
    )


@singleton_job(every=EVERY, name="embed.sync", catch_up="none")
def sync_tick(ctx: JobContext) -> None:
    """A plain job: runs on a worker of Baton's pool."""
    _write(ctx, threading.current_thread().name)


@singleton_job(every=EVERY, name="embed.async", catch_up="none")
async def async_tick(ctx: JobContext) -> None:
    """An ``async def`` job: runs on the host's loop (uvicorn) or Baton's own; the sink's
    blocking write goes to a thread, never onto the loop."""
    ctx.check()
    where = threading.current_thread().name
    await asyncio.to_thread(_write, ctx, where)


@singleton_job(every="2s", name="embed.failing", catch_up="none")
def failing(ctx: JobContext) -> None:
    """Always fails, with a message that must not reach the status page by default."""
    raise RuntimeError("password=hunter2 must stay out of the status page")
