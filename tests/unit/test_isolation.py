"""isolation='process': a child that cannot outlive the lease, on real child processes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.clock import SYSTEM_CLOCK
from scheduler.firing.isolation import run_in_child
from scheduler.jobs.context import JobContext
from tests.harness.replicas import wait_for
from tests.jobs import isolation as isolation_jobs


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture
def pidfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "child.pid"
    monkeypatch.setenv("BATON_TEST_PIDFILE", str(path))
    return path


def context(lost: threading.Event, deadline: Callable[[], float]) -> JobContext:
    return JobContext(
        job="iso",
        scheduled_time=datetime(2026, 1, 1, tzinfo=UTC),
        fencing_token=7,
        replica_id="r1",
        lost=lost,
        _deadline=deadline,
        _clock=SYSTEM_CLOCK,
    )


def far() -> float:
    return time.monotonic() + 60


def test_outcomes_ok_and_error_come_back_from_the_child(pidfile: Path) -> None:
    """A returning job is ok, a raising one is error with its message; both ran elsewhere."""
    result = run_in_child(isolation_jobs.ok_job, context(threading.Event(), far), 0.5)
    assert result.outcome == "ok" and int(pidfile.read_text()) != os.getpid()
    result = run_in_child(isolation_jobs.failing_job, context(threading.Event(), far), 0.5)
    assert result.outcome == "error" and "RuntimeError: boom in the child" in result.message


@pytest.mark.parametrize(
    "job", [isolation_jobs.cooperative_job, isolation_jobs.stubborn_job], ids=lambda f: f.__name__
)
def test_lost_leadership_ends_the_child(pidfile: Path, job: Callable[[JobContext], None]) -> None:
    """On loss the child gets SIGTERM; one that swallows it is SIGKILLed after the grace."""
    lost = threading.Event()
    results: list[object] = []
    runner = threading.Thread(
        target=lambda: results.append(run_in_child(job, context(lost, far), abort_grace=0.3))
    )
    runner.start()
    pid = wait_for(
        lambda: pidfile.exists() and pidfile.read_text() and int(pidfile.read_text()),
        20,
        "child start",
    )
    lost.set()
    runner.join(timeout=10)
    assert not runner.is_alive() and not alive(pid)
    (result,) = results
    assert result.outcome == "lost"  # type: ignore[attr-defined]


def test_child_ends_itself_at_the_lease_deadline(pidfile: Path) -> None:
    """With nobody to tell it (the replica paused), the child still stops at the deadline."""
    deadline = time.monotonic() + 1.5
    result = run_in_child(
        isolation_jobs.stubborn_job, context(threading.Event(), lambda: deadline), 5.0
    )
    ended = time.monotonic()
    assert result.outcome == "lost" and "exit status 86" in result.message
    assert ended >= deadline - 0.1, "the child ended before its deadline"
    assert not alive(int(pidfile.read_text()))


def test_sys_exit_and_keyboard_interrupt_in_the_child_are_errors(pidfile: Path) -> None:
    """sys.exit() or KeyboardInterrupt in a process job: an error naming the type."""
    result = run_in_child(isolation_jobs.exiting_job, context(threading.Event(), far), 0.5)
    assert (result.outcome, result.message) == ("error", "SystemExit")
    result = run_in_child(isolation_jobs.interrupted_job, context(threading.Event(), far), 0.5)
    assert (result.outcome, result.message) == ("error", "KeyboardInterrupt")


def test_a_child_aborted_while_importing_its_job_reports_lost_without_a_traceback(
    pidfile: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """Leadership ends while the spawned child still imports the jobs module: the abort
    is the run's outcome (lost), and nothing is printed (no traceback on the replica's
    stderr)."""
    from tests.jobs import slow_import  # imported here without the pause

    monkeypatch.setenv("BATON_TEST_IMPORT_PAUSE", "10")
    lost = threading.Event()
    threading.Timer(1.0, lost.set).start()
    started = time.monotonic()
    result = run_in_child(slow_import.quick_job, context(lost, far), 5.0)
    assert result.outcome == "lost", result
    assert time.monotonic() - started < 6.0, "the child was not aborted in its import"
    assert "Traceback" not in capfd.readouterr().err
