"""Chaos CI plumbing: lines a run must show in the terminal, under ``pytest -q`` too.

pytest shows a test's own output only when it fails. A chaos run's seed must be seen when
it passes as well (the next run draws another, and a flaky failure is only reproducible
from a seed someone wrote down), so :func:`announce` writes past the output capture when
the run starts (in a plain run: an xdist worker has no terminal), and attaches the line to
the test's report, which ``tests/conftest.py`` repeats in the summary at the end (also
under xdist: reports travel from the workers to the controller).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import pytest

_LINES = pytest.StashKey[list[str]]()
#: The key of the lines in a report's ``user_properties`` (read by tests/conftest.py).
PROPERTY = "chaos-run"


@pytest.fixture(scope="session")
def announce(pytestconfig: pytest.Config) -> Callable[[str], None]:
    """A function writing a line to the terminal now and again in the final summary."""
    lines = pytestconfig.stash.setdefault(_LINES, [])
    plugins = pytestconfig.pluginmanager

    def write(line: str) -> None:
        lines.append(line)
        reporter = plugins.get_plugin("terminalreporter")
        if reporter is None:  # -p no:terminal: the summary is gone too, nothing to do
            return
        capture = plugins.get_plugin("capturemanager")
        # The reporter writes to fd 1, which the capture has redirected while a test runs.
        with capture.global_and_fixture_disabled() if capture else nullcontext():
            reporter.write_line(line)

    return write


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """Attach the lines announced since the last report to this one."""
    outcome = yield
    lines = item.config.stash.get(_LINES, [])
    if lines:
        report = outcome.get_result()  # type: ignore[attr-defined]
        report.user_properties.extend((PROPERTY, line) for line in lines)
        lines.clear()
    return None
