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

from scheduler.backends.runs import Retention, RunRecord, fire_key
from scheduler.backends.sqlite import SqliteBackend
from scheduler.clock import FakeClock
from scheduler.errors import BackendUnavailable
from scheduler.firing.claims import Fire
from scheduler.firing.pauses import PAUSED_FIRES_PREFIX, skipped_runs
from scheduler.firing.runner import Runner
from scheduler.jobs.spec import build_spec
from scheduler.leadership.controls import PAUSE_PREFIX
from scheduler.leadership.elector import Elector
from scheduler.leadership.lease import Holder
from scheduler.leadership.members import Member
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.metrics import Metrics

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
def setup(tmp_path: Path) -> Iterator[tuple[Runner, Flaky, Term, Elector]]:
    clock = FakeClock(wall=at(30))
    backend = Flaky(SqliteBackend.from_url(f"sqlite:///{tmp_path}/baton.db", clock=clock))
    timings = LeaseTimings.of(10.0, None, None)
    holder = Holder.new("r1")
    spec = build_spec(_noop, every="1s", name="job", catch_up="all", misfire_grace=30.0)
    metrics = Metrics()
    elector = Elector(backend, "c", holder, timings, clock, metrics=metrics, jobs=[spec.name])
    runner = Runner(
        [spec],
        elector,
        backend,  # type: ignore[arg-type]
        "c",
        clock=clock,
        replica_id=holder.replica_id,
        timings=timings,
        metrics=metrics,
    )
    lease = backend.try_acquire("c", holder, timings.lease_ttl)
    assert lease is not None
    for second in range(11):  # ran :00-:10
        run = RunRecord("job", at(second), "r0", lease.token, started=at(second))
        backend.claim(lease, run.finished("ok", at(second)), Retention())
    try:
        yield runner, backend, Term(lease, timings, clock), elector
    finally:
        runner.close()
        backend.backend.close()


def _catch_up(runner: Runner, term: Term) -> list[datetime]:
    """The fires a catch-up under ``term`` queues (the elector is not started: the runner
    follows, so they never run)."""
    return runner.catch_up(term).get("job", [])


def _claim(runner: Runner, second: int, term: Term) -> RunRecord | None:
    """What the runner's claim step makes of the fire at ``second`` under ``term``."""
    (claimed,) = runner.claims.claim([Fire("job", at(second))], term)
    return claimed


def test_a_paused_fire_is_recorded_and_never_caught_up(
    setup: tuple[Runner, Flaky, Term, Elector],
) -> None:
    """Fires the leader skips as paused land in paused-fires:<job> as one run; after the
    resume a catch-up queues only the fires nobody handled (none of the skipped ones)."""
    runner, backend, term, elector = setup
    backend.set_control("c", PAUSE_PREFIX + "job", '{"by": "op"}')
    elector.controls.refresh()
    for second in range(11, 25):
        assert _claim(runner, second, term) is None
    runs = skipped_runs(backend.controls("c")[PAUSED_FIRES_PREFIX + "job"])
    assert runs == [(fire_key(at(11)), fire_key(at(24)))]
    backend.set_control("c", PAUSE_PREFIX + "job", None)  # resumed
    assert _catch_up(runner, term) == [at(s) for s in range(25, 31)]


def test_a_record_that_could_not_be_written_still_counts_and_is_retried(
    setup: tuple[Runner, Flaky, Term, Elector],
) -> None:
    """While the backend refuses the write, the skipped fire is kept in memory (this leader's
    catch-up already leaves it alone); the next write stores it."""
    runner, backend, term, elector = setup
    backend.set_control("c", PAUSE_PREFIX + "job", '{"by": "op"}')
    elector.controls.refresh()
    backend.down = True
    assert _claim(runner, 11, term) is None
    assert PAUSED_FIRES_PREFIX + "job" not in backend.controls("c")
    backend.down = False
    backend.set_control("c", PAUSE_PREFIX + "job", None)
    assert at(11) not in _catch_up(runner, term)
    elector.backend_ok = True  # the backend answers again
    runner.claims.flush()  # what the maintenance loop does
    runs = skipped_runs(backend.controls("c")[PAUSED_FIRES_PREFIX + "job"])
    assert runs == [(fire_key(at(11)), fire_key(at(11)))]
    assert runner.claims.paused_fires("job").unsaved == frozenset()


def test_catch_up_waits_for_readable_controls(
    setup: tuple[Runner, Flaky, Term, Elector],
) -> None:
    """A new leader that cannot read the controls (the records of paused fires) queues
    nothing rather than guess; the catch-up is retried once they answer."""
    runner, backend, term, elector = setup
    backend.set_control("c", PAUSE_PREFIX + "job", '{"by": "op"}')
    elector.controls.refresh()
    for second in range(11, 31):
        _claim(runner, second, term)
    backend.set_control("c", PAUSE_PREFIX + "job", None)
    # In memory: the controls as read before the skips (no record of them); a catch-up that
    # trusted them would queue every fire since :11.
    backend.controls_down = True
    assert _catch_up(runner, term) == []
    assert runner.claims.pending()
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
