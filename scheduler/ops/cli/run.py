"""``baton run``: join the election and fire the jobs this replica wins."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence

import click

from scheduler.errors import UserError
from scheduler.jobs.spec import load_jobs
from scheduler.ops.cli.loading import command_settings
from scheduler.ops.cli.params import config_options
from scheduler.ops.cli.signals import SignalStop
from scheduler.ops.logs import configure


@click.command("run")
@config_options
@click.option(
    "--jobs",
    "jobs",
    multiple=True,
    metavar="MODULE",
    help="Module or package with @singleton_job functions (repeatable; config key jobs).",
)
@click.option("--replica-id", default=None, help="This replica's name (default: host name).")
@click.option(
    "--log-format", type=click.Choice(["json", "console", "auto"]), default=None, help="Logs."
)
def run_command(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    jobs: Sequence[str],
    replica_id: str | None,
    log_format: str | None,
) -> None:
    """Run a replica: join the election and fire the jobs this replica wins."""
    # Imported here: the read commands need none of the election, firing or HTTP machinery.
    from scheduler.ops.replica import Replica

    settings = command_settings(
        config_path,
        backend=backend,
        cluster=cluster,
        jobs=list(jobs) or None,
        replica_id=replica_id,
        log_format=log_format,
    )
    log = configure(settings.replica_id, settings.log_format)
    specs = load_jobs(settings.jobs)  # bad jobs stop us here, before the election
    if not specs:
        raise UserError(f"config key 'jobs': no @singleton_job found in {settings.jobs}")
    replica = Replica(settings, specs)
    replica.preflight()  # refused for good (credentials, ACL, read-only, schema): exit 2

    signals = {"count": 0}

    def on_signal(signum: int) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            os._exit(130)  # second signal: the operator insists, skip the grace period
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    stop = SignalStop(on_signal, (signal.SIGTERM, signal.SIGINT))
    try:
        replica.run(stop)
    finally:
        stop.close()
