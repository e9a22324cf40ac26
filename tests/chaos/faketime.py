"""Clock faults on replica processes with libfaketime (Debian package ``faketime``).

Every replica of a chaos run starts with ``LD_PRELOAD`` of libfaketime and its own
``FAKETIME_TIMESTAMP_FILE`` (``FAKETIME_NO_CACHE=1``, so a change applies at the next clock
read). Writing ``+7`` to a replica's file moves its clocks 7 s ahead; ``+0`` puts them back.
libfaketime moves ``CLOCK_MONOTONIC`` by the same offset as the wall clock, and even
*backwards*, which a real kernel never does: a clock fault here is a wall-clock step *and* a
monotonic step. What that does to each backend is the point of the fault (see CHAOS.md).

Two things found on the way, and handled here (both are libfaketime 0.9.10 on CPython 3.11):

* With monotonic faking on, every timed ``Lock``/``Event``/``Condition``/``Queue`` wait
  hangs for ever: CPython waits with ``sem_clockwait`` on an absolute *fake* monotonic
  deadline, which libfaketime does not intercept, and the fake monotonic clock is placed on
  the wall-clock timeline (about 1.8e9 s). A small shim (``clockwait_shim.c``, compiled
  with ``gcc`` into the run's directory) is preloaded before libfaketime to translate the
  deadline; ``time.sleep`` is intercepted by libfaketime itself and works.
* With ``FAKETIME_DONT_FAKE_MONOTONIC=1`` (wall clock only) ``time.sleep`` fails with
  ``EINVAL`` instead. The suite therefore uses the default (monotonic faked) with the shim.

Processes a replica starts (``isolation="process"`` children) inherit the environment and so
the same fake clock.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

SHIM_SOURCE = Path(__file__).with_name("clockwait_shim.c")
LIBFAKETIME_GLOBS = (
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
)


def libfaketime() -> str:
    """The path of libfaketime.so.1; fails loudly when the package is missing."""
    for pattern in LIBFAKETIME_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    raise RuntimeError(
        "libfaketime.so.1 not found: the chaos suite's clock faults need the Debian package "
        "'faketime' (apt-get install faketime, or scripts/ensure-servers.sh)"
    )


def build_shim(directory: Path) -> Path:
    """Compile the sem_clockwait shim into ``directory`` (once per source version)."""
    source = SHIM_SOURCE.read_bytes()
    target = directory / f"libclockwait-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if target.exists():
        return target
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError(
            "no C compiler (gcc) found: the chaos suite compiles a 30-line shim that makes "
            "CPython's timed waits work under libfaketime (apt-get install gcc)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".tmp")
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-O2", "-o", str(partial), str(SHIM_SOURCE), "-ldl"],
        check=True,
        capture_output=True,
    )
    partial.rename(target)
    return target


class FakeClocks:
    """The fake clocks of a run's replicas, one timestamp file each.

    Args:
        directory: where the shim and the timestamp files live.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.library = libfaketime()
        self.shim = build_shim(directory)
        self.offsets: dict[str, int] = {}

    def _file(self, replica: str) -> Path:
        return self.directory / f"{replica}.faketime"

    def env(self, replica: str) -> dict[str, str]:
        """Environment for a replica process: its clock starts at its current offset."""
        self.set(replica, self.offsets.get(replica, 0))
        return {
            "LD_PRELOAD": f"{self.shim} {self.library}",
            "FAKETIME_TIMESTAMP_FILE": str(self._file(replica)),
            "FAKETIME_NO_CACHE": "1",
            # No shared memory segments: kill -9 would leak them.
            "FAKETIME_DISABLE_SHM": "1",
        }

    def set(self, replica: str, offset: int) -> None:
        """Move ``replica``'s clocks to real time + ``offset`` seconds (at its next read)."""
        path = self._file(replica)
        partial = path.with_suffix(".tmp")
        partial.write_text(f"{offset:+d}\n")
        partial.rename(path)  # never a half-written file for a reader
        self.offsets[replica] = offset

    def reset(self) -> None:
        """Every clock back to real time."""
        for replica in list(self.offsets):
            self.set(replica, 0)


def probe(clocks: FakeClocks) -> None:
    """Check that a faked Python process can wait with a timeout and sees the offset.

    Raises:
        RuntimeError: the preload does not work on this machine.
    """
    env = clocks.env("probe")
    clocks.set("probe", 5)
    code = (
        "import threading, time; s = time.time(); threading.Event().wait(0.05); "
        "time.sleep(0.01); print(round(s))"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, **env},
            capture_output=True,
            timeout=20,
            check=True,
            text=True,
        ).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        raise RuntimeError(f"a Python process under libfaketime does not work: {exc}") from exc
    finally:
        clocks.set("probe", 0)
    skew = int(out.strip()) - time.time()
    if not 3 <= skew <= 7:
        raise RuntimeError(f"libfaketime did not move the clock by +5 s (saw {skew:+.1f} s)")
