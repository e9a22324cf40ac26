"""A new leader's catch-up leaves alone the fires an operator's pause skipped.

Embedded backend and a fake clock; ``baton pause``/``resume`` end to end (with a leadership
change after the resume) is in tests/scenarios/test_operator.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.jobs import build_spec
from scheduler.members import RESUMED_PREFIX, paused_window
from tests.harness.catch_up import queued_by_catch_up

BASE = datetime(2026, 1, 1, tzinfo=UTC)


def _noop(ctx: object) -> None:
    """A job that does nothing."""


def at(second: int) -> datetime:
    return BASE + timedelta(seconds=second)


@pytest.mark.parametrize(
    ("policy", "resumed", "expected"),
    [("all", 24, list(range(25, 31))), ("latest", 30, [])],
)
def test_catch_up_skips_the_fires_of_a_finished_pause(
    tmp_path: Path, policy: str, resumed: int, expected: list[int]
) -> None:
    """Ran :00-:10, paused from :11, resumed at ``resumed``, ran nothing since; now :30 and
    a new leader catches up: only fires after the resume, never one the pause skipped."""
    spec = build_spec(_noop, every="1s", name="job", catch_up=policy, misfire_grace=30.0)
    window = {"paused_at": at(11).isoformat(), "resumed_at": at(resumed).isoformat()}
    controls = {RESUMED_PREFIX + "job": json.dumps(window)}
    queued = queued_by_catch_up(tmp_path, spec, [at(s) for s in range(11)], at(30), controls)
    assert queued == [at(s) for s in expected]


def test_paused_window_ignores_a_missing_or_unreadable_record() -> None:
    good = json.dumps({"paused_at": at(1).isoformat(), "resumed_at": at(2).isoformat()})
    assert paused_window({RESUMED_PREFIX + "j": good}, "j") == (at(1), at(2))
    assert paused_window({}, "j") is None
    assert paused_window({RESUMED_PREFIX + "j": "{not json"}, "j") is None
    assert paused_window({RESUMED_PREFIX + "j": '{"paused_at": 1}'}, "j") is None
