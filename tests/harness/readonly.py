"""Read-only files and directories that bind root too, for the permanent-error tests.

Root ignores permission bits (``CAP_DAC_OVERRIDE``), and CI containers often run tests as
root, where ``chmod 0444`` alone proves nothing. Two ways round it:

* :func:`obey_file_permissions`, a ``preexec_fn`` for a child process: it drops the two
  capabilities from the child's bounding set, so the ``baton`` it runs is an ordinary user
  as far as file permissions go (the tests' own files stay readable: root still owns them);
* :func:`make_read_only`, for a child the test cannot start itself (the bad-input harness):
  ``chmod`` plus, under root, the immutable attribute (``chattr +i``), which binds root too.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2


def obey_file_permissions() -> None:
    """In a child, before exec: drop root's power to ignore file permissions (a no-op for
    other users, who never had it)."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def make_read_only(path: Path) -> Callable[[], None]:
    """Make ``path`` (a file or a directory) read-only for everyone; returns the undo.

    Raises:
        RuntimeError: running as root without a working ``chattr`` (a file system without
            the immutable attribute): the test cannot make the path read-only for root.
    """
    mode = path.stat().st_mode & 0o7777
    path.chmod(0o555 if path.is_dir() else 0o444)
    chattr = shutil.which("chattr") if os.geteuid() == 0 else None
    if os.geteuid() == 0:
        done = None
        if chattr is not None:
            done = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True)
        if done is None or done.returncode != 0:
            path.chmod(mode)
            why = done.stderr.strip() if done is not None else "chattr is not installed"
            raise RuntimeError(
                f"running as root, {path} cannot be made read-only for root ({why}); "
                "run the tests as an ordinary user"
            )

    def undo() -> None:
        if chattr is not None:
            subprocess.run([chattr, "-i", str(path)], capture_output=True, check=False)
        path.chmod(mode)

    return undo
