"""Thread jobs that end their thread (sys.exit(), KeyboardInterrupt, any BaseException), and
/healthz once the runner itself has stopped working.

The runner and its SQLite backend are real; only the elector is a stand-in that says which
term this replica leads. A dead thread is made the way one dies in production: an exception
raised inside it (``PyThreadState_SetAsyncExc``), outside any job.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from scheduler.backends import LeaseBackend, from_url
from scheduler.firing.runner import Runner
from scheduler.jobs.context import JobContext
from scheduler.jobs.spec import JobSpec, build_spec
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from tests.harness.replicas import wait_for
from tests.harness.stand_in import StandInElector

CLUSTER = "exits"
TIMINGS = LeaseTimings.of(30.0, None, None)
#: The thread a test kills reports its death through threading.excepthook: expected.
killing = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


class Custom(BaseException):
    """A BaseException that is neither Exception nor one of the builtin exits."""


def _exit_plain() -> None:
    sys.exit()


def _exit_code() -> None:
    sys.exit(3)


def _keyboard() -> None:
    raise KeyboardInterrupt


def _system_exit() -> None:
    raise SystemExit("bye")


def _generator_exit() -> None:
    raise GeneratorExit


def _custom() -> None:
    raise Custom("secret=hunter2")


#: (id, how the job ends its thread, the message history records)
ENDINGS: list[tuple[str, Callable[[], None], str]] = [
    ("sys-exit", _exit_plain, "SystemExit"),
    ("sys-exit-3", _exit_code, "SystemExit: 3"),
    ("keyboard-interrupt", _keyboard, "KeyboardInterrupt"),
    ("system-exit-text", _system_exit, "SystemExit: bye"),
    ("generator-exit", _generator_exit, "GeneratorExit"),
    ("custom-base-exception", _custom, "Custom: secret=hunter2"),
]


class Rig:
    """A started runner leading on SQLite, with one job that ends its thread on every run."""

    def __init__(self, tmp_path: Path, end: Callable[[], None]) -> None:
        self.calls = 0

        def job(ctx: JobContext) -> None:
            self.calls += 1
            end()

        self.spec: JobSpec = build_spec(job, every="1h", name="exits.job", catch_up="all")
        self.backend: LeaseBackend = from_url(f"sqlite:///{tmp_path}/b.db", op_timeout=1.0)
        self.elector = StandInElector("r1", TIMINGS)
        self.runner = Runner(
            [self.spec],
            self.elector,
            self.backend,
            CLUSTER,
            replica_id=self.elector.holder.replica_id,
            timings=TIMINGS,
            metrics=self.elector.metrics,
        )
        lease = self.backend.try_acquire(CLUSTER, self.elector.holder, TIMINGS.lease_ttl)
        assert lease is not None
        self.elector.term = Term(lease, TIMINGS, self.runner.clock)
        self.runner.start()

    def fire(self, seconds_ago: float) -> datetime:
        """Hand the lane a fire ``seconds_ago`` in the past and wait until it has drained
        and its outcome is stored (outcomes are stored in batches, just after the run)."""
        fire = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds_ago)
        lane = self.runner.lanes[self.spec.name]
        lane.submit([fire])
        assert lane.idle.wait(10), "the lane stayed busy after the job ended its thread"

        def ended() -> bool:
            stored = self.backend.lookup(CLUSTER, self.spec.name, fire)
            return stored is not None and not stored.unfinished

        wait_for(ended, 10, "the run's outcome to be stored")
        return fire

    def close(self) -> None:
        if self.runner.accepting:
            self.runner.stop_firing()
        self.runner.close()
        self.backend.close()


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[[Callable[[], None]], Rig]]:
    rigs: list[Rig] = []

    def make(end: Callable[[], None]) -> Rig:
        rigs.append(Rig(tmp_path, end))
        return rigs[-1]

    yield make
    for rig in rigs:
        rig.close()


@pytest.mark.parametrize(("end", "message"), [e[1:] for e in ENDINGS], ids=[e[0] for e in ENDINGS])
def test_job_that_ends_its_thread_is_an_error_and_keeps_its_schedule(
    make_rig: Callable[[Callable[[], None]], Rig],
    end: Callable[[], None],
    message: str,
) -> None:
    """Recorded as error with the exception type, logged, the next fire runs, runner healthy."""
    with capture_logs() as logs:  # before the runner binds its logger
        rig = make_rig(end)
        first = rig.fire(seconds_ago=2)
        second = rig.fire(seconds_ago=1)
    assert rig.calls == 2, "the fire after the one that ended its thread did not run"
    runs = rig.backend.history(CLUSTER, rig.spec.name, 10)
    assert [(r.scheduled_time, r.outcome, r.message) for r in runs] == [
        (second, "error", message),
        (first, "error", message),
    ]
    assert rig.runner.loop_problem() is None
    failed = [e for e in logs if e["event"] == "job_failed"]
    assert [e["error"] for e in failed] == [message, message]
    assert all(e["log_level"] == "error" and e.get("exc_info") for e in failed)


def test_sigterm_does_not_wait_for_a_job_that_ended_its_thread(
    make_rig: Callable[[Callable[[], None]], Rig],
) -> None:
    """After sys.exit() in a job every lane is idle: shutdown's wait returns at once."""
    rig = make_rig(_exit_code)
    rig.fire(seconds_ago=1)
    rig.runner.stop_firing()
    began = time.monotonic()
    assert rig.runner.wait_idle(30)
    assert time.monotonic() - began < 0.5


def _raise_in(thread: threading.Thread, exc: type[BaseException]) -> None:
    """Raise ``exc`` inside ``thread`` at its next Python instruction."""
    assert thread.ident is not None
    done = ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread.ident), ctypes.py_object(exc)
    )
    assert done == 1


@killing
def test_liveness_reports_a_dead_fire_loop(make_rig: Callable[[Callable[[], None]], Rig]) -> None:
    """The APScheduler loop thread dies: loop_problem names it."""
    rig = make_rig(_exit_plain)
    loop = rig.runner.threads()["fire loop"]
    # Raised while the loop waits for its next instant: raised while it held its lock (say,
    # just inside Condition.__enter__), the exception would kill the thread with the lock
    # held and wake() would wait for ever (seen once under load): a test artefact.
    wait_for(lambda: _waiting(loop), 5, "the loop thread to wait for its next instant")
    _raise_in(loop, SystemExit)
    rig.runner.wake()
    wait_for(lambda: not loop.is_alive(), 5, "the loop thread to die")
    assert rig.runner.loop_problem() == "scheduler loop is not running"


def _waiting(thread: threading.Thread) -> bool:
    """True while ``thread`` waits in ``Condition.wait`` (its lock released)."""
    frame = sys._current_frames().get(thread.ident or 0)
    return (
        frame is not None
        and frame.f_code.co_name == "wait"
        and (frame.f_code.co_filename == threading.__file__)
    )


@killing
def test_liveness_reports_a_dead_maintenance_loop(
    make_rig: Callable[[Callable[[], None]], Rig],
) -> None:
    """The maintenance thread (deferred outcomes, doubts) dies: loop_problem names it."""
    rig = make_rig(_exit_plain)
    maintenance = rig.runner.threads()["maintenance"]
    _raise_in(maintenance, SystemExit)
    rig.runner.wake()
    wait_for(lambda: not maintenance.is_alive(), 5, "the maintenance thread to die")
    assert rig.runner.loop_problem() == "maintenance loop is not running"


@killing
def test_liveness_reports_a_job_pool_that_lost_a_worker(
    make_rig: Callable[[Callable[[], None]], Rig],
) -> None:
    """A pool worker dies outside any job (its queued work is lost): loop_problem says so."""
    rig = make_rig(_exit_plain)
    pool = rig.runner.pool
    worker = pool.submit(threading.current_thread).result(5)  # the pool's only worker
    _raise_in(worker, SystemExit)
    pool.submit(lambda: None)  # wakes the idle worker, which dies as it takes this item
    wait_for(lambda: not worker.is_alive(), 5, "the pool worker to die")
    assert rig.runner.loop_problem() == "job pool: 1 worker thread(s) died"


def test_liveness_reports_a_job_pool_shut_down_while_firing(
    make_rig: Callable[[Callable[[], None]], Rig],
) -> None:
    """The job pool is shut down while the fire loop still runs: unhealthy, and a lane
    that cannot hand its fire to the pool goes back to idle instead of staying busy."""
    rig = make_rig(_exit_plain)
    rig.runner.pool.shutdown(wait=True)
    assert rig.runner.loop_problem() == "job pool is shut down"
    lane = rig.runner.lanes[rig.spec.name]
    lane.submit([datetime.now(UTC)])
    assert lane.idle.wait(10)  # claimed and started in batches first: not at once
