"""A new leader's catch-up leaves alone the fires an operator's pause skipped.

Embedded backend and a fake clock; ``baton pause``/``resume`` end to end (with a leadership
change after the resume) is in tests/scenarios/test_operator.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.jobs import build_spec
from scheduler.members import PAUSES_KEPT, RESUMED_PREFIX, add_paused_window, paused_windows
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
    value = add_paused_window({}, "job", at(5).isoformat(), at(6).isoformat(), "op")
    value = add_paused_window(
        {RESUMED_PREFIX + "job": value}, "job", at(11).isoformat(), at(resumed).isoformat(), "op"
    )
    controls = {RESUMED_PREFIX + "job": value}
    queued = queued_by_catch_up(tmp_path, spec, [at(s) for s in range(11)], at(30), controls)
    assert queued == [at(s) for s in expected]


def test_paused_windows_keep_the_newest_and_ignore_unreadable_records() -> None:
    value = ""
    for n in range(PAUSES_KEPT + 3):
        value = add_paused_window(
            {RESUMED_PREFIX + "j": value} if value else {},
            "j",
            at(2 * n).isoformat(),
            at(2 * n + 1).isoformat(),
            "op",
        )
    windows = paused_windows({RESUMED_PREFIX + "j": value}, "j")
    newest = PAUSES_KEPT + 2
    assert len(windows) == PAUSES_KEPT
    assert windows[0] == (at(6), at(7)) and windows[-1] == (at(2 * newest), at(2 * newest + 1))
    assert paused_windows({}, "j") == []
    assert paused_windows({RESUMED_PREFIX + "j": "{not json"}, "j") == []
    assert paused_windows({RESUMED_PREFIX + "j": '[{"paused_at": 1}]'}, "j") == []
    assert add_paused_window({RESUMED_PREFIX + "j": "{not json"}, "j", "a", "b", "op") == (
        '[{"paused_at": "a", "resumed_at": "b", "by": "op"}]'
    )
