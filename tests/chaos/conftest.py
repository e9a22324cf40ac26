"""Chaos CI plumbing: lines a run must show in the terminal, under ``pytest -q`` too.

pytest shows a test's own output only when it fails. A chaos run's seed must be seen when
it passes as well (the next run draws another, and a flaky failure is only reproducible
from a seed someone wrote down), so :func:`announce` writes past the output capture, once
when the run starts and once more in the summary at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import pytest

_LINES = pytest.StashKey[list[str]]()


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


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Repeat the announced lines at the end, where a reader of a CI log looks first."""
    lines = terminalreporter.config.stash.get(_LINES, [])
    if lines:
        terminalreporter.write_sep("-", "chaos runs")
        for line in lines:
            terminalreporter.write_line(line)
