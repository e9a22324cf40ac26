"""A new leader's catch-up leaves alone the fires a leader skipped because of a pause.

Embedded backend and a fake clock; ``baton pause``/``resume`` end to end (with a leadership
change after the resume) is in tests/scenarios/test_operator.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.backends.runs import fire_key
from scheduler.firing.pauses import (
    MAX_RUNS,
    PAUSED_FIRES_PREFIX,
    add_skipped,
    skipped_runs,
    was_skipped,
)
from scheduler.jobs.spec import JobSpec, build_spec
from tests.harness.catch_up import queued_by_catch_up

BASE = datetime(2026, 1, 1, tzinfo=UTC)
LONG_AGO = BASE - timedelta(days=1)


def _noop(ctx: object) -> None:
    """A job that does nothing."""


def at(second: int) -> datetime:
    return BASE + timedelta(seconds=second)


def _skipped(spec: JobSpec, seconds: list[int], raw: str | None = None) -> str:
    def after(fire: datetime) -> datetime | None:
        return spec.trigger.get_next_fire_time(fire, fire)  # type: ignore[no-any-return]

    return add_skipped(raw, [at(s) for s in seconds], after, LONG_AGO)


@pytest.mark.parametrize(
    ("policy", "skipped_until", "expected"),
    [
        # Skipped :11-:23 as paused, then the leader died: the fires after it are missed.
        ("all", 23, list(range(24, 31))),
        ("latest", 23, [30]),
        # Skipped :11-:30: nothing is missed, whatever the policy.
        ("all", 30, []),
        ("latest", 30, []),
    ],
)
def test_catch_up_skips_the_fires_a_pause_skipped(
    tmp_path: Path, policy: str, skipped_until: int, expected: list[int]
) -> None:
    """Ran :00-:10 (with a short pause at :05-:06 recorded too), then skipped as paused from
    :11; now :30 and a new leader catches up: never a fire a pause skipped."""
    spec = build_spec(_noop, every="1s", name="job", catch_up=policy, misfire_grace=30.0)
    value = _skipped(spec, [5, 6])
    value = _skipped(spec, list(range(11, skipped_until + 1)), value)
    ran = [at(s) for s in range(11) if s not in (5, 6)]
    controls = {PAUSED_FIRES_PREFIX + "job": value}
    queued = queued_by_catch_up(tmp_path, spec, ran, at(30), controls)
    assert queued == [at(s) for s in expected]


def test_latest_does_not_run_an_older_fire_of_a_pause_nobody_recorded(tmp_path: Path) -> None:
    """catch_up=latest: a fire older than one skipped as paused is superseded by it, as an
    older hole is by a later claim (the leader that coalesced its backlog recorded only the
    newest)."""
    spec = build_spec(_noop, every="1s", name="job", catch_up="latest", misfire_grace=30.0)
    controls = {PAUSED_FIRES_PREFIX + "job": _skipped(spec, [25])}
    now = at(25) + timedelta(milliseconds=500)
    queued = queued_by_catch_up(tmp_path, spec, [at(s) for s in range(11)], now, controls)
    assert queued == []


def test_skipped_runs_merge_consecutive_fires_only() -> None:
    """Consecutive fires become one run; a fire between two runs that was not skipped (it
    ran, or was missed for another reason) keeps them apart, so it can still be caught up."""
    spec = build_spec(_noop, every="2s", name="j")
    value = _skipped(spec, [10, 12, 14])
    value = _skipped(spec, [18, 20], value)
    value = _skipped(spec, [8], value)
    runs = skipped_runs(value)
    assert runs == [(fire_key(at(8)), fire_key(at(14))), (fire_key(at(18)), fire_key(at(20)))]
    assert was_skipped(runs, at(12)) and was_skipped(runs, at(18))
    assert not was_skipped(runs, at(16)) and not was_skipped(runs, at(22))
    # Adding a fire already recorded changes nothing.
    assert _skipped(spec, [12, 20], value) == value


def test_skipped_runs_drop_old_and_unreadable_records() -> None:
    """Runs past the horizon go; at most MAX_RUNS stay; a record that is not a list of
    integer pairs counts as nothing recorded."""
    spec = build_spec(_noop, every="1s", name="j")
    value = None
    for n in range(MAX_RUNS + 5):
        value = _skipped(spec, [3 * n], value)  # never consecutive: one run each
    runs = skipped_runs(value)
    assert len(runs) == MAX_RUNS and runs[-1] == (fire_key(at(3 * (MAX_RUNS + 4))),) * 2
    fresh = add_skipped(value, [at(1000)], lambda f: None, keep_after=at(999))
    assert skipped_runs(fresh) == [(fire_key(at(1000)), fire_key(at(1000)))]
    for bad in (None, "{not json", '{"a": 1}', "[[1]]", '[["1", "2"]]', "[[5, 3]]", "[[true, 2]]"):
        assert skipped_runs(bad) == []
    assert skipped_runs("[[1, 2], [7]]") == [(1, 2)]
