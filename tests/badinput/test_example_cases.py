"""Bad-input catalogue: how a table file looks (each area keeps its own file beside this)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.harness import Case, check

CASES = [
    Case(
        "unknown-command",
        ("frobnicate",),
        exit=2,
        lines=1,
        says="baton: error: no such command 'frobnicate' (see 'baton --help')",
    ),
    Case(
        "unknown-option",
        ("status", "--frob"),
        exit=2,
        lines=1,
        says="baton: error: no such option '--frob' (see 'baton status --help')",
    ),
    Case(
        "config-missing-file",
        ("status", "--config", "{tmp}/nope.yaml"),
        exit=2,
        says="nope.yaml",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One clear message, the right exit code, no traceback, no secret."""
    check(case, tmp_path, request)
