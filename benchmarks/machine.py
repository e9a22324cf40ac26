"""Facts about the machine and the software the numbers were measured with."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks.procs import ROOT


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command_output(args: list[str]) -> str:
    if shutil.which(args[0]) is None:
        return "not installed"
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else ""


def _redis_server_version() -> str:
    text = _command_output(["redis-server", "--version"])
    for part in text.split():
        if part.startswith("v="):
            return part[2:]
    return text


def _zookeeper_version() -> str:
    for jar in sorted(Path("/usr/share/java").glob("zookeeper-[0-9]*.jar")):
        return jar.stem.removeprefix("zookeeper-")
    return "not installed"


def _postgresql_version() -> str:
    try:
        from tests.harness.postgresql_server import postgres_bindir

        postgres = postgres_bindir() / "postgres"
    except Exception:
        return "not installed"
    return _command_output([str(postgres), "--version"]).removeprefix("postgres (PostgreSQL) ")


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return done.stdout.strip() or "unknown"


def facts() -> list[tuple[str, str]]:
    """(name, value) pairs for the Machine table."""
    cpus = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cpus
    return [
        ("date (UTC)", datetime.now(UTC).strftime("%Y-%m-%d %H:%M")),
        ("CPU", f"{_cpu_model()}; {cpus} logical CPUs ({usable} usable)"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", platform.python_version()),
        ("redis-server", _redis_server_version()),
        ("ZooKeeper server", _zookeeper_version()),
        ("Java", _command_output(["java", "-version"])),
        ("PostgreSQL server", _postgresql_version()),
        ("redis-py", _package("redis")),
        ("APScheduler", _package("APScheduler")),
        ("kazoo", _package("kazoo")),
        (
            "psycopg / psycopg2 (tooz's driver)",
            f"{_package('psycopg')} / {_package('psycopg2-binary')}",
        ),
        ("tooz", _package("tooz")),
        ("Baton commit", _git_commit()),
    ]


def load_average() -> str:
    """The 1/5/15-minute load averages, to show whether other work shared the machine."""
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"
