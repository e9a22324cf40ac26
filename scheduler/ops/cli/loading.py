"""What a command starts from: its settings, its jobs modules importable, its backend open."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from scheduler.backends.base import LeaseBackend
from scheduler.errors import ConfigError, excerpt
from scheduler.ops.config import Settings, load_settings

#: Seconds a read-only command (leader, jobs, history) waits for the backend.
READ_TIMEOUT = 2.0


def command_settings(config_path: str | None, **overrides: Any) -> Settings:
    """Load the settings and make the jobs modules importable from any directory.

    A jobs module is looked up in the current directory first (as ``python -m`` would), then
    in the config file's directory, then on ``PYTHONPATH``; a ``--jobs`` given as a path (a
    ``.py`` file or a package directory) is imported from there, wherever that is.

    Raises:
        ConfigError: a bad setting, or a ``--jobs`` path that cannot be a jobs module.
    """
    if overrides.get("jobs"):
        overrides["jobs"] = [_jobs_module(entry) for entry in overrides["jobs"]]
    settings = load_settings(config_path, overrides)
    config_file = config_path or os.environ.get("BATON_CONFIG")
    if config_file:
        _importable(Path(config_file).absolute().parent, first=False)
    return settings


def _importable(directory: Path, *, first: bool) -> None:
    """Put ``directory`` on ``sys.path``: before the current directory when ``first``
    (a path named on the command line), else right after it."""
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # the current directory, as load_jobs would put it
    entry = str(directory)
    if entry in sys.path:
        return
    cwd = sys.path.index("") if "" in sys.path else sys.path.index(".")
    sys.path.insert(cwd if first else cwd + 1, entry)


def _jobs_module(entry: str) -> str:
    """The module name of a ``--jobs`` entry; a path's directory goes on ``sys.path``.

    Raises:
        ConfigError: a path that is neither a ``.py`` file nor a package directory, or whose
            name cannot be a module name (key ``jobs``).
    """
    if not isinstance(entry, str) or not (entry.endswith(".py") or "/" in entry or os.sep in entry):
        return entry  # a module name: validated with the settings
    path = Path(entry).expanduser().absolute()
    if path.suffix == ".py" and path.is_file():
        module = path.stem
    elif path.is_dir():
        module = path.name
    else:
        raise ConfigError("jobs", f"{excerpt(entry)} is neither a .py file nor a package directory")
    if not module.isidentifier():
        raise ConfigError("jobs", f"{excerpt(entry)}: {excerpt(module)} is not a module name")
    _importable(path.parent, first=True)
    return module


def open_reader(settings: Settings) -> LeaseBackend:
    """Open the backend for a read or operator command and check that it answers.

    Never creates anything: an embedded database that does not exist is a
    :class:`~scheduler.errors.ConfigError` (exit 2), not a fresh, empty one reporting
    "no leader"; only ``baton run`` creates it.
    """
    backend = settings.open_backend(READ_TIMEOUT, create=False)
    try:
        backend.check()
    except BaseException:
        backend.close()
        raise
    return backend
