"""An ``async def`` job for the abort scenarios (tests/scenarios/test_async_jobs.py): it
awaits for an hour unless its replica loses leadership, which cancels it; it writes to the
sink when it starts, when the cancellation reaches it, and in its ``finally``."""

from __future__ import annotations

import asyncio
import os

from scheduler import JobContext, singleton_job
from tests.harness.sink import env_sink as sink


def _write(ctx: JobContext, phase: str) -> None:
    sink().write(
        "async",
        ctx.fencing_token,
        phase=phase,
        job=ctx.job,
        tick=ctx.scheduled_time.isoformat(),
        replica=ctx.replica_id,
        pid=os.getpid(),
    )


@singleton_job(every="2s", name="async.long", catch_up="none")
async def long_job(ctx: JobContext) -> None:
    await asyncio.to_thread(_write, ctx, "start")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        _write(ctx, "cancelled")  # a short blocking write: the test's own bookkeeping
        raise
    finally:
        _write(ctx, "finally")


@singleton_job(every="1s", name="async.waiter", catch_up="none")
async def waiter(ctx: JobContext) -> None:
    """Waits for the loss with the awaitable form of ctx.lost, shielded from the cancel."""
    await asyncio.to_thread(_write, ctx, "waiting")
    try:
        lost = await asyncio.shield(ctx.wait_lost(timeout=3600))
    except asyncio.CancelledError:
        lost = ctx.lost.is_set()
    _write(ctx, f"wait_lost={lost}")
