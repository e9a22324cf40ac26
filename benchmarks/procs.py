"""Child processes of the benchmarks: start, signal and reap by PID; read their logs and /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | bool | None], timeout: float, what: str, interval: float = 0.01
) -> T:
    """Poll ``condition`` until it returns something truthy; raise ``TimeoutError`` naming
    ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def start_module(
    module: str, args: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Run ``python -m module args...`` from the repository root, output to ``log_path``."""
    full_env = dict(os.environ)
    full_env.update({"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    full_env.update(env or {})
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM the process by PID, SIGKILL it if it has not exited within ``timeout``."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a log file, one per line; other lines (and a torn last line) skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def log_time(event: dict[str, Any]) -> float:
    """Wall time (Unix seconds) of a Baton JSON log line (structlog's ISO ``timestamp``)."""
    return datetime.fromisoformat(str(event["timestamp"])).timestamp()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of ``pid`` so far (all its threads), from /proc/<pid>/stat."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces; fields after its closing parenthesis are fixed.
    fields = raw[raw.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (VmRSS in /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
