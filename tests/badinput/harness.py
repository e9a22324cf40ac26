"""The bad-input catalogue's one check: run ``baton`` as a user would, judge what it printed.

A :class:`Case` is one bad (or edge) input: command-line arguments, optionally a config file,
a jobs module and environment variables. :func:`check` runs ``python -m scheduler`` in a
fresh directory and asserts the contract every edge keeps:

* the exit code: 0 ok, 1 the backend is unreachable or the operation did not take effect,
  2 usage or configuration (README, "Exit codes");
* on failure, exactly ``lines`` lines on stderr (one, by default), each at most
  :data:`MAX_LINE` characters (bad input is echoed as a short excerpt, never whole);
* no ``Traceback`` anywhere, and the :data:`SENTINEL` secret in no output.

Placeholders in arguments, config, jobs and environment: ``{tmp}`` (the case's directory),
``{secret}`` (the sentinel), ``{redis}`` / ``{redis_port}`` and ``{zookeeper}`` /
``{zookeeper_hosts}`` (the session's real servers, started only for cases that name them),
``{dead_port}`` (a loopback port nothing listens on).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.harness.redis_server import RedisServer, free_port
from tests.harness.replicas import ROOT
from tests.harness.zookeeper_server import ZooKeeperServer

#: A password no output may ever show. It has a ``/`` and an ``@`` (as generated passwords
#: do), which naive URL parsing splits on.
SENTINEL = "Hunter2-s3cr3t/w@rd"
#: The longest line a bad input may produce on stderr.
MAX_LINE = 400


@dataclass(frozen=True)
class Case:
    """One catalogue entry.

    Attributes:
        id: a short stable name (the pytest id).
        args: arguments after ``baton``.
        exit: the expected exit code.
        config: YAML written to ``{tmp}/baton.yaml`` (pass ``--config {tmp}/baton.yaml``).
        jobs: Python written to ``{tmp}/badjobs.py`` (importable as ``badjobs``).
        env: extra environment variables.
        lines: expected stderr lines when ``exit`` is not 0; ``None`` skips the count.
        says: a substring stderr must contain (case-insensitive), e.g. the key named.
        timeout: seconds the command may take.
    """

    id: str
    args: tuple[str, ...]
    exit: int
    config: str | None = None
    jobs: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    lines: int | None = 1
    says: str = ""
    timeout: float = 30.0


def url_case(id: str, url: str, says: str = "", exit: int = 2, command: str = "leader") -> Case:
    """A backend URL case: ``baton <command> --backend <url>``, one line naming ``says``."""
    return Case(id, (command, "--backend", url), exit=exit, says=says)


def _placeholders(case: Case, tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    text = " ".join([*case.args, case.config or "", case.jobs or "", *case.env.values()])
    values = {"tmp": str(tmp), "secret": SENTINEL}
    if "{dead_port}" in text:
        values["dead_port"] = str(free_port())
    if "{redis" in text:
        redis: RedisServer = request.getfixturevalue("redis_server")
        values["redis"] = redis.url
        values["redis_port"] = str(redis.port)
    if "{zookeeper" in text:
        zookeeper: ZooKeeperServer = request.getfixturevalue("zookeeper_server")
        values["zookeeper"] = zookeeper.url()
        values["zookeeper_hosts"] = zookeeper.hosts
    return values


def _fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace("{" + name + "}", value)
    return text


def run_case(
    case: Case, tmp: Path, request: pytest.FixtureRequest
) -> subprocess.CompletedProcess[str]:
    """Run ``case`` in ``tmp``; returns what ``baton`` printed and its exit code."""
    values = _placeholders(case, tmp, request)
    if case.config is not None:
        (tmp / "baton.yaml").write_text(_fill(case.config, values))
    if case.jobs is not None:
        (tmp / "badjobs.py").write_text(_fill(case.jobs, values))
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp), str(ROOT)])
    env.update({k: _fill(v, values) for k, v in case.env.items()})
    return subprocess.run(
        [sys.executable, "-m", "scheduler", *(_fill(a, values) for a in case.args)],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=case.timeout,
    )


def check(case: Case, tmp: Path, request: pytest.FixtureRequest) -> None:
    """Run ``case`` and assert the edge contract (see the module docstring)."""
    done = run_case(case, tmp, request)
    shown = f"$ baton {' '.join(case.args)}\nexit {done.returncode}\n{done.stderr[-2000:]}"
    output = done.stdout + done.stderr
    assert "Traceback" not in output, shown
    assert SENTINEL not in output, f"the secret was printed:\n{shown}"
    assert done.returncode == case.exit, shown
    if case.exit != 0 and case.lines is not None:
        lines = done.stderr.strip().splitlines()
        assert len(lines) == case.lines, shown
        assert all(len(line) <= MAX_LINE for line in lines), shown
    if case.says:
        assert case.says.lower() in done.stderr.lower(), shown
