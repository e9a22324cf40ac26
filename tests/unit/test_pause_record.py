"""The leader's record of fires it skipped as paused, and presence records' job lists.

Embedded backend and a fake clock; the end-to-end reproduction (pause, pause again, resign,
resume, resign on real replicas) is in tests/scenarios/test_operator.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.backends.sqlite import SqliteBackend
from scheduler.clock import FakeClock
from scheduler.errors import BackendUnavailable
from scheduler.firing.pauses import PAUSED_FIRES_PREFIX, skipped_runs
from scheduler.firing.runner import Runner
from scheduler.firing.runs import Retention, RunRecord, fire_key
from scheduler.jobs.spec import build_spec
from scheduler.leadership.elector import Elector, Term
from scheduler.leadership.lease import Holder
from scheduler.leadership.members import PAUSE_PREFIX, Member
from scheduler.leadership.timings import LeaseTimings

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _noop(ctx: object) -> None:
    """A job that does nothing."""


def at(second: int) -> datetime:
    return BASE + timedelta(seconds=second)


class Flaky:
    """The embedded backend, with set_control failing while ``down`` and controls while
    ``controls_down``."""

    def __init__(self, backend: SqliteBackend) -> None:
        self.backend = backend
        self.down = False
        self.controls_down = False

    def controls(self, name: str) -> dict[str, str]:
        if self.controls_down:
            raise BackendUnavailable("sqlite://test", "no answer")
        return self.backend.controls(name)

    def set_control(self, name: str, key: str, value: str | None) -> None:
        if self.down:
            raise BackendUnavailable("sqlite://test", "no answer")
        self.backend.set_control(name, key, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Runner, Flaky, Term, FakeClock]]:
    clock = FakeClock(wall=at(30))
    backend = Flaky(SqliteBackend.from_url(f"sqlite:///{tmp_path}/baton.db", clock=clock))
    timings = LeaseTimings.of(10.0, None, None)
    holder = Holder.new("r1")
    spec = build_spec(_noop, every="1s", name="job", catch_up="all", misfire_grace=30.0)
    elector = Elector(backend, "c", holder, timings, clock, jobs=[spec.name])
    runner = Runner([spec], elector, backend, "c", clock=clock)
    lease = backend.try_acquire("c", holder, timings.lease_ttl)
    assert lease is not None
    for second in range(11):  # ran :00-:10
        run = RunRecord("job", at(second), "r0", lease.token, started=at(second))
        backend.claim(lease, run.finished("ok", at(second)), Retention())
    try:
        yield runner, backend, Term(lease, timings, clock), clock
    finally:
        runner.close()
        backend.backend.close()


def _catch_up(runner: Runner, term: Term) -> list[datetime]:
    queued: list[datetime] = []
    runner.lanes["job"].submit = lambda fires, keep=False: queued.extend(fires)  # type: ignore[method-assign]
    runner._catch_up(term)
    return queued


def test_a_paused_fire_is_recorded_and_never_caught_up(
    setup: tuple[Runner, Flaky, Term, FakeClock],
) -> None:
    """Fires the leader skips as paused land in paused-fires:<job> as one run; after the
    resume a catch-up queues only the fires nobody handled (none of the skipped ones)."""
    runner, backend, term, _ = setup
    backend.set_control("c", PAUSE_PREFIX + "job", '{"by": "op"}')
    runner.elector.refresh_controls()
    spec = runner.lanes["job"].spec
    for second in range(11, 25):
        assert runner._claim_fire(spec, at(second), term, 0.0, runner.log) is None
    runs = skipped_runs(backend.controls("c")[PAUSED_FIRES_PREFIX + "job"])
    assert runs == [(fire_key(at(11)), fire_key(at(24)))]
    backend.set_control("c", PAUSE_PREFIX + "job", None)  # resumed
    assert _catch_up(runner, term) == [at(s) for s in range(25, 31)]


def test_a_record_that_could_not_be_written_still_counts_and_is_retried(
    setup: tuple[Runner, Flaky, Term, FakeClock],
) -> None:
    """While the backend refuses the write, the skipped fire is kept in memory (this leader's
    catch-up already leaves it alone); the next write stores it."""
    runner, backend, term, _ = setup
    backend.set_control("c", PAUSE_PREFIX + "job", '{"by": "op"}')
    runner.elector.refresh_controls()
    spec = runner.lanes["job"].spec
    backend.down = True
    assert runner._claim_fire(spec, at(11), term, 0.0, runner.log) is None
    assert PAUSED_FIRES_PREFIX + "job" not in backend.controls("c")
    backend.down = False
    backend.set_control("c", PAUSE_PREFIX + "job", None)
    assert at(11) not in _catch_up(runner, term)
    runner._flush_paused("job")  # what the maintenance loop does
    runs = skipped_runs(backend.controls("c")[PAUSED_FIRES_PREFIX + "job"])
    assert runs == [(fire_key(at(11)), fire_key(at(11)))]
    assert runner._paused_unsaved == {}


def test_catch_up_waits_for_readable_controls(
    setup: tuple[Runner, Flaky, Term, FakeClock],
) -> None:
    """A new leader that cannot read the controls (the records of paused fires) queues
    nothing rather than guess; the catch-up is retried once they answer."""
    runner, backend, term, _ = setup
    spec = runner.lanes["job"].spec
    backend.set_control("c", PAUSE_PREFIX + "job", '{"by": "op"}')
    runner.elector.refresh_controls()
    for second in range(11, 31):
        runner._claim_fire(spec, at(second), term, 0.0, runner.log)
    backend.set_control("c", PAUSE_PREFIX + "job", None)
    runner.elector.controls = {}  # as a follower that never read them
    backend.controls_down = True
    assert _catch_up(runner, term) == []
    assert runner.recovery.pending()
    backend.controls_down = False
    assert _catch_up(runner, term) == []  # every fire since :11 was skipped as paused


def test_member_job_list_is_parsed_as_untrusted_input() -> None:
    """A presence record's job list is names only if it is a list of strings; anything else
    (or none, from an older replica) reads as "did not say"."""
    member = Member("r1", "h", "0.1.0", BASE, BASE, ("a.b", "c"))
    assert Member.from_json(member.to_json()) == member
    raw = member.to_dict()
    for bad in (None, "a.b", [1, 2], {"a": 1}, ["a", None]):
        raw["jobs"] = bad
        assert Member.from_json(json.dumps(raw)).jobs is None
    del raw["jobs"]
    assert Member.from_json(json.dumps(raw)).jobs is None
