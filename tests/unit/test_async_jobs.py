"""``async def`` jobs: definition rules, the awaitable ctx.wait_lost(), and a run on an
event loop cancelled when its term ends (CancelledError inside, so finally runs; recorded
as LeadershipLost outside). Real event loops, a fake clock for the lease."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from scheduler.clock import FakeClock
from scheduler.errors import JobDefinitionError, LeadershipLost
from scheduler.firing.coroutines import Coroutines, LoopGone
from scheduler.jobs.context import JobContext
from scheduler.jobs.spec import build_spec
from tests.unit.terms import context, make_term

#: Seconds any wait in these tests may take before the test fails (never reached when
#: the behaviour is right).
PATIENCE = 10.0


async def job_ok(ctx: JobContext) -> None:
    await asyncio.sleep(0)


def test_async_job_is_accepted_and_marked_async() -> None:
    """A coroutine function is a valid job; its spec says it is async."""
    spec = build_spec(job_ok, every="1s", name="a.ok")
    assert spec.is_async
    assert not build_spec(lambda ctx: None, every="1s", name="a.plain").is_async


def test_async_job_with_process_isolation_is_refused() -> None:
    """isolation='process' takes plain functions only, said at definition."""
    with pytest.raises(JobDefinitionError, match="isolation='process' runs plain functions"):
        build_spec(job_ok, every="1s", name="a.proc", isolation="process")


def test_async_on_lost_hook_is_refused() -> None:
    """on_lost runs on the hook thread: a coroutine function there is refused."""

    async def hook(ctx: JobContext) -> None:
        pass

    with pytest.raises(JobDefinitionError, match="on_lost must be a plain function"):
        build_spec(job_ok, every="1s", name="a.hook", on_lost=hook)


def test_term_end_runs_callbacks_once_and_late_ones_at_once() -> None:
    """Term.on_end: callbacks run once at the end; one added after the end runs at once;
    a removed one never runs; a failing one does not stop the others."""
    term = make_term(FakeClock())
    calls: list[str] = []
    term.on_end(lambda: calls.append("a"))
    remove = term.on_end(lambda: calls.append("removed"))
    term.on_end(lambda: 1 / 0)  # type: ignore[func-returns-value]
    term.on_end(lambda: calls.append("b"))
    remove()
    assert term.end("expired")
    assert not term.end("again")
    term.on_end(lambda: calls.append("late"))
    assert calls == ["a", "b", "late"]


def test_wait_lost_wakes_when_the_term_ends_from_another_thread() -> None:
    """ctx.wait_lost() returns True as soon as the term ends on another thread, and False
    on timeout while leading; the loop keeps running meanwhile."""
    clock = FakeClock()
    term = make_term(clock)
    ctx = context(term, clock, notify=True)

    async def main() -> tuple[bool, bool, int]:
        assert await ctx.wait_lost(timeout=0.05) is False
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(ticker())
        threading.Timer(0.2, term.end, args=("expired",)).start()
        lost = await asyncio.wait_for(ctx.wait_lost(), PATIENCE)
        beat.cancel()
        return lost, await ctx.wait_lost(timeout=0), ticks

    lost, again, ticks = asyncio.run(main())
    assert lost and again
    assert ticks > 3  # the loop was not blocked while waiting


def test_wait_lost_without_notification_polls() -> None:
    """A context built by hand (no term notification) still wakes, by polling."""
    clock = FakeClock()
    term = make_term(clock)
    ctx = context(term, clock)

    async def main() -> bool:
        threading.Timer(0.1, term.end, args=("expired",)).start()
        return await asyncio.wait_for(ctx.wait_lost(), PATIENCE)

    assert asyncio.run(main())


def test_run_on_own_loop_returns_and_raises_what_the_job_did() -> None:
    """Baton's own loop thread runs the task; the worker sees its result or exception."""
    clock = FakeClock()
    coroutines = Coroutines()
    coroutines.start()
    try:
        term = make_term(clock)
        seen: list[str] = []

        async def job(ctx: JobContext) -> None:
            ctx.check()
            seen.append(threading.current_thread().name)

        coroutines.run(job, context(term, clock, notify=True), term)
        assert seen == ["baton-async"]

        async def failing(ctx: JobContext) -> None:
            raise ValueError("boom")

        with pytest.raises(ValueError, match="boom"):
            coroutines.run(failing, context(term, clock, notify=True), term)
        assert coroutines.problem() is None
    finally:
        coroutines.close()


def test_leadership_loss_cancels_the_task_and_finally_runs() -> None:
    """The term ending cancels the task at its await: CancelledError inside (finally runs,
    before the worker returns), LeadershipLost for the worker."""
    clock = FakeClock()
    coroutines = Coroutines()
    coroutines.start()
    try:
        term = make_term(clock)
        events: list[str] = []
        started = threading.Event()

        async def long_job(ctx: JobContext) -> None:
            try:
                started.set()
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise
            finally:
                await asyncio.sleep(0.05)  # cleanup may await
                events.append("finally")

        threading.Thread(
            target=lambda: (started.wait(PATIENCE), term.end("renew_deadline")), daemon=True
        ).start()
        with pytest.raises(LeadershipLost, match="renew_deadline"):
            coroutines.run(long_job, context(term, clock, notify=True), term)
        assert events == ["cancelled", "finally"]
    finally:
        coroutines.close()


def test_term_already_ended_cancels_at_once() -> None:
    """A term that ended before the task was scheduled cancels it before its first step."""
    clock = FakeClock()
    coroutines = Coroutines()
    coroutines.start()
    try:
        term = make_term(clock)
        term.end("expired")
        ran: list[bool] = []

        async def job(ctx: JobContext) -> None:
            ran.append(True)

        with pytest.raises(LeadershipLost):
            coroutines.run(job, context(term, clock, notify=True), term)
        assert ran == []
    finally:
        coroutines.close()


def test_host_loop_used_and_a_stopped_host_loop_does_not_hold_the_worker() -> None:
    """With the host's loop the task runs there; if that loop stops before the task ends,
    the worker gives up (LoopGone) instead of waiting for ever."""
    clock = FakeClock()
    loop = asyncio.new_event_loop()
    runner = threading.Thread(target=loop.run_forever, name="host-loop", daemon=True)
    runner.start()
    try:
        coroutines = Coroutines(loop)
        coroutines.start()  # nothing of its own to start
        term = make_term(clock)
        seen: list[str] = []

        async def job(ctx: JobContext) -> None:
            seen.append(threading.current_thread().name)

        coroutines.run(job, context(term, clock, notify=True), term)
        assert seen == ["host-loop"]

        async def forever(ctx: JobContext) -> None:
            await asyncio.sleep(3600)

        threading.Timer(0.2, lambda: loop.call_soon_threadsafe(loop.stop)).start()
        with pytest.raises(LoopGone):
            coroutines.run(forever, context(term, clock, notify=True), term)
    finally:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        runner.join(PATIENCE)
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()
    assert coroutines.problem() == "the event loop of async jobs is closed"


def test_a_call_that_raises_before_returning_a_coroutine_does_not_hold_the_worker() -> None:
    """A job callable that raises when called (before any coroutine exists) fails the run
    at once instead of leaving its worker waiting."""
    clock = FakeClock()
    coroutines = Coroutines()
    coroutines.start()
    try:
        term = make_term(clock)

        def broken(ctx: JobContext) -> Any:
            raise TypeError("not a coroutine after all")

        with pytest.raises(TypeError, match="not a coroutine"):
            coroutines.run(broken, context(term, clock, notify=True), term)
    finally:
        coroutines.close()
