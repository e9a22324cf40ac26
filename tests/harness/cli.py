"""Run the ``baton`` command as a user would: ``python -m scheduler`` in a directory."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.harness.replicas import ROOT


def baton(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 30,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m scheduler *args`` in ``cwd`` (so modules there are importable), with
    no ``BATON_*`` variable of the test's environment and Baton itself on PYTHONPATH."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    full["PYTHONPATH"] = str(ROOT)
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        preexec_fn=preexec_fn,
    )
