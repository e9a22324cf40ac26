"""The ``baton`` command: run a replica, show the leader, the jobs and their history.

Exit codes (:data:`EXIT_CODES`, shown by ``baton --help``; README, "Exit codes"): 0 success;
1 the backend could not be reached or failed, or the operation did not take effect; 2 a
usage or configuration error. Errors are one line, without a traceback.

One module a concern: :mod:`~scheduler.ops.cli.errors` (exit codes, the one error line),
:mod:`~scheduler.ops.cli.params` (shared options, parameter types),
:mod:`~scheduler.ops.cli.loading` (settings, jobs modules, opening the backend),
:mod:`~scheduler.ops.cli.render` (times and tables), and the commands:
:mod:`~scheduler.ops.cli.run`, :mod:`~scheduler.ops.cli.observe` (leader, jobs, history,
status), :mod:`~scheduler.ops.cli.operate` (resign, pause, resume), :mod:`~scheduler.ops.cli.schema`
(the PostgreSQL DDL). This module puts them
in one group.
"""

from __future__ import annotations

import click

from scheduler import __version__
from scheduler.ops.cli.errors import ERROR_LINE_MAX, EXIT_CODES, BatonGroup
from scheduler.ops.cli.loading import READ_TIMEOUT
from scheduler.ops.cli.observe import history, jobs_command, leader, status
from scheduler.ops.cli.operate import PROGRESS_EVERY, RESIGN_WAIT_MAX, pause, resign, resume
from scheduler.ops.cli.params import NAME_EXCERPT, JobName, Seconds, config_options, json_option
from scheduler.ops.cli.run import run_command
from scheduler.ops.cli.schema import schema_command

__all__ = [
    "ERROR_LINE_MAX",
    "EXIT_CODES",
    "NAME_EXCERPT",
    "PROGRESS_EVERY",
    "READ_TIMEOUT",
    "RESIGN_WAIT_MAX",
    "BatonGroup",
    "JobName",
    "Seconds",
    "cli",
    "config_options",
    "json_option",
    "main",
]


@click.group(
    cls=BatonGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
@click.version_option(__version__, prog_name="baton")
def cli() -> None:
    """Baton: distributed cron. Every replica schedules; exactly one fires each tick."""


for _command in (
    run_command,
    leader,
    jobs_command,
    history,
    status,
    resign,
    pause,
    resume,
    schema_command,
):
    cli.add_command(_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="baton")
