"""The ``baton`` command: run a replica, show the leader, the jobs and their history.

Exit codes: 0 success; 1 the backend could not be reached or failed; 2 a user error (bad
config, bad job definition, unknown option), printed as one line without a traceback.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import FrameType
from typing import Any, TypeVar

import click

from scheduler import __version__
from scheduler.backends.base import LeaseBackend
from scheduler.config import Settings, load_settings
from scheduler.errors import BackendAuthError, BackendError, BatonError, UserError
from scheduler.jobs import load_jobs
from scheduler.logs import configure
from scheduler.members import PAUSE_PREFIX, RESIGN, RESUMED_PREFIX, add_paused_window
from scheduler.runs import RunRecord

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds a read-only command (leader, jobs, history) waits for the backend.
READ_TIMEOUT = 2.0


class BatonGroup(click.Group):
    """Turns Baton's own errors into one line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            click.echo(f"baton: error: {exc}", err=True)
            sys.exit(2)
        except BackendError as exc:
            click.echo(f"baton: error: {exc}", err=True)
            sys.exit(1)
        except BatonError as exc:
            click.echo(f"baton: error: {exc}", err=True)
            sys.exit(1)


def config_options(func: F) -> F:
    """The options every command shares: where the config is and what to override."""
    func = click.option(
        "--cluster", default=None, help="Election name (config key cluster; default 'default')."
    )(func)
    func = click.option(
        "--backend",
        default=None,
        metavar="URL",
        help="Backend URL (sqlite:///path, redis://host:port/db, rediss://, zookeeper://).",
    )(func)
    func = click.option(
        "--config",
        "config_path",
        default=None,
        type=click.Path(dir_okay=False),
        help="YAML config file (also BATON_CONFIG).",
    )(func)
    return func


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(func)


def _settings(config_path: str | None, **overrides: Any) -> Settings:
    return load_settings(config_path, overrides)


def _open_reader(settings: Settings) -> LeaseBackend:
    backend = settings.open_backend(READ_TIMEOUT)
    backend.check()
    return backend


@click.group(cls=BatonGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="baton")
def cli() -> None:
    """Baton: distributed cron. Every replica schedules; exactly one fires each tick."""


@cli.command()
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
def run(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    jobs: Sequence[str],
    replica_id: str | None,
    log_format: str | None,
) -> None:
    """Run a replica: join the election and fire the jobs this replica wins."""
    from scheduler.replica import Replica

    settings = _settings(
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
    try:
        replica.backend.check()
    except BackendAuthError:
        replica.backend.close()
        raise
    except BackendError as exc:
        log.warning("backend_unavailable", error=str(exc), detail="will keep retrying")

    stop = threading.Event()
    signals = {"count": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        signals["count"] += 1
        if signals["count"] > 1:
            os._exit(130)  # second signal: the operator insists, skip the grace period
        log.info("signal_received", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    replica.run(stop)


@cli.command()
@config_options
@json_option
def leader(
    config_path: str | None, backend: str | None, cluster: str | None, as_json: bool
) -> None:
    """Show who leads: replica, host, since, fencing token, lease time left."""
    settings = _settings(config_path, backend=backend, cluster=cluster)
    store = _open_reader(settings)
    try:
        record = store.read(settings.cluster)
    finally:
        store.close()
    data: dict[str, Any] = {"cluster": settings.cluster, "backend": store.url, "leader": None}
    if record is not None:
        data["leader"] = {
            "replica_id": record.replica_id,
            "host": record.host,
            "since": record.since.isoformat(),
            "token": record.token,
            "ttl_left": None if record.ttl_left is None else round(record.ttl_left, 3),
        }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    rows = [("cluster", settings.cluster), ("backend", store.url)]
    if record is None:
        rows.append(("leader", "(none)"))
    else:
        ago = (datetime.now(UTC) - record.since).total_seconds()
        rows += [
            ("leader", record.replica_id),
            ("host", record.host),
            ("since", f"{_when(record.since)} ({_duration(ago)} ago)"),
            ("token", str(record.token)),
            (
                "lease",
                "held by session" if record.ttl_left is None else f"{record.ttl_left:.1f}s left",
            ),
        ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


@cli.command("jobs")
@config_options
@click.option("--jobs", "jobs", multiple=True, metavar="MODULE", help="Jobs module(s).")
@json_option
def jobs_command(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    jobs: Sequence[str],
    as_json: bool,
) -> None:
    """List the jobs: schedule, next fire, last run with its replica and outcome."""
    settings = _settings(config_path, backend=backend, cluster=cluster, jobs=list(jobs) or None)
    specs = load_jobs(settings.jobs)
    store = _open_reader(settings)
    now = datetime.now(UTC)
    items: list[dict[str, Any]] = []
    try:
        controls = store.controls(settings.cluster)
        for spec in specs:
            last = store.history(settings.cluster, spec.name, 1)
            next_fire = spec.next_fire(now)
            items.append(
                {
                    "name": spec.name,
                    "schedule": spec.schedule,
                    "catch_up": spec.catch_up,
                    "misfire_grace": spec.misfire_grace,
                    "next_fire": next_fire.isoformat() if next_fire else None,
                    "paused": PAUSE_PREFIX + spec.name in controls,
                    "last_run": last[0].to_dict() if last else None,
                }
            )
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(items, indent=2))
        return
    rows = []
    for item in items:
        last_run = item["last_run"]
        rows.append(
            (
                item["name"],
                item["schedule"] + (" (paused)" if item["paused"] else ""),
                _when(datetime.fromisoformat(item["next_fire"])) if item["next_fire"] else "-",
                _when(datetime.fromisoformat(last_run["scheduled_time"])) if last_run else "-",
                last_run["replica_id"] if last_run else "-",
                last_run["outcome"] if last_run else "-",
            )
        )
    _table(("JOB", "SCHEDULE", "NEXT FIRE", "LAST RUN", "REPLICA", "OUTCOME"), rows)


@cli.command()
@config_options
@click.argument("job")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@json_option
def history(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    job: str,
    limit: int,
    as_json: bool,
) -> None:
    """Show the newest runs of JOB (the claim records), newest first."""
    settings = _settings(config_path, backend=backend, cluster=cluster)
    store = _open_reader(settings)
    try:
        runs = store.history(settings.cluster, job, limit)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps([run.to_dict() for run in runs], indent=2))
        return
    if not runs:
        click.echo(f"no runs recorded for job {job!r} in cluster {settings.cluster!r}")
        return
    _table(
        ("SCHEDULED", "REPLICA", "TOKEN", "STARTED", "DURATION", "OUTCOME", "MESSAGE"),
        [_run_row(run) for run in runs],
    )


@cli.command()
@config_options
@json_option
def status(
    config_path: str | None, backend: str | None, cluster: str | None, as_json: bool
) -> None:
    """List the live replicas (presence records) and which one leads."""
    settings = _settings(config_path, backend=backend, cluster=cluster)
    store = _open_reader(settings)
    try:
        record = store.read(settings.cluster)
        members = store.members(settings.cluster)
        controls = store.controls(settings.cluster)
    finally:
        store.close()
    leader_id = record.replica_id if record else None
    paused = sorted(key[len(PAUSE_PREFIX) :] for key in controls if key.startswith(PAUSE_PREFIX))
    if as_json:
        doc = {
            "cluster": settings.cluster,
            "leader": leader_id,
            "token": record.token if record else None,
            "replicas": [dict(m.to_dict(), leader=m.replica_id == leader_id) for m in members],
            "paused_jobs": paused,
        }
        click.echo(json.dumps(doc, indent=2))
        return
    now = datetime.now(UTC)
    rows = [
        (
            member.replica_id,
            "leader" if member.replica_id == leader_id else "follower",
            member.host,
            member.version,
            _when(member.started),
            f"{_duration((now - member.last_seen).total_seconds())} ago",
        )
        for member in members
    ]
    leading = leader_id or "(none)"
    click.echo(f"cluster {settings.cluster}: {len(members)} live replica(s), leader {leading}")
    _table(("REPLICA", "ROLE", "HOST", "VERSION", "STARTED", "LAST SEEN"), rows)
    if paused:
        click.echo(f"paused jobs: {', '.join(paused)}")


@cli.command()
@config_options
@click.option(
    "--wait",
    "wait_seconds",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait for another replica to take over (0: do not wait).",
)
@json_option
def resign(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    wait_seconds: float,
    as_json: bool,
) -> None:
    """Ask the current leader to step down gracefully; another replica takes over.

    The leader sees the request at its next renewal (within renew_interval), lets running
    jobs finish (up to shutdown_grace), releases the lease and stays out for lease_ttl.
    """
    settings = _settings(config_path, backend=backend, cluster=cluster)
    store = _open_reader(settings)
    try:
        record = store.read(settings.cluster)
        if record is None:
            raise BatonError(f"cluster {settings.cluster!r} has no leader to resign")
        store.set_control(settings.cluster, RESIGN, str(record.token))
        successor = None
        deadline = time.monotonic() + wait_seconds
        while wait_seconds and time.monotonic() < deadline:
            current = store.read(settings.cluster)
            if current is not None and current.token != record.token:
                successor = current
                break
            time.sleep(0.05)
    finally:
        store.close()
    if as_json:
        doc = {
            "cluster": settings.cluster,
            "resigned": record.replica_id,
            "token": record.token,
            "new_leader": successor.replica_id if successor else None,
            "new_token": successor.token if successor else None,
        }
        click.echo(json.dumps(doc, indent=2))
    elif successor is not None:
        click.echo(
            f"{record.replica_id} (token {record.token}) stepped down; "
            f"{successor.replica_id} leads now (token {successor.token})"
        )
    else:
        click.echo(f"asked {record.replica_id} (token {record.token}) to step down")
    if wait_seconds and successor is None:
        raise BatonError(f"no other replica took over within {wait_seconds:g} s")


def _pause_start(value: str) -> str | None:
    try:
        at = json.loads(value)["at"]
        datetime.fromisoformat(at)
    except (ValueError, KeyError, TypeError):
        return None
    return str(at)


def _set_paused(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    job: str,
    paused: bool,
    as_json: bool,
) -> None:
    settings = _settings(config_path, backend=backend, cluster=cluster)
    store = _open_reader(settings)
    by, now = f"{getpass.getuser()}@{socket.gethostname()}", datetime.now(UTC).isoformat()
    try:
        if paused:
            value = json.dumps({"by": by, "at": now})
            store.set_control(settings.cluster, PAUSE_PREFIX + job, value)
        else:
            controls = store.controls(settings.cluster)
            current = controls.get(PAUSE_PREFIX + job)
            if current is not None:
                # Written before the pause is lifted, so a catch-up never sees the job
                # resumed without knowing which fires the pause skipped.
                since = _pause_start(current) or now
                value = add_paused_window(controls, job, since, now, by)
                store.set_control(settings.cluster, RESUMED_PREFIX + job, value)
            store.set_control(settings.cluster, PAUSE_PREFIX + job, None)
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps({"cluster": settings.cluster, "job": job, "paused": paused}))
    else:
        state = "paused" if paused else "resumed"
        click.echo(
            f"job {job!r} {state} in cluster {settings.cluster!r} "
            "(the leader sees it within renew_interval)"
        )


@cli.command()
@config_options
@click.argument("job")
@json_option
def pause(
    config_path: str | None, backend: str | None, cluster: str | None, job: str, as_json: bool
) -> None:
    """Stop firing JOB cluster-wide until `baton resume JOB` (fires meanwhile are skipped)."""
    _set_paused(config_path, backend, cluster, job, True, as_json)


@cli.command()
@config_options
@click.argument("job")
@json_option
def resume(
    config_path: str | None, backend: str | None, cluster: str | None, job: str, as_json: bool
) -> None:
    """Fire JOB again after `baton pause JOB`."""
    _set_paused(config_path, backend, cluster, job, False, as_json)


def _run_row(run: RunRecord) -> tuple[str, ...]:
    duration = "-" if run.ended is None else _duration((run.ended - run.started).total_seconds())
    return (
        _when(run.scheduled_time),
        run.replica_id,
        str(run.token),
        _when(run.started, precise=True),
        duration,
        run.outcome,
        run.message[:60],
    )


def _when(moment: datetime, precise: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S.%f" if precise else "%Y-%m-%d %H:%M:%S"
    text = moment.astimezone(UTC).strftime(fmt)
    return (text[:-3] if precise else text) + "Z"


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    for row in (headers, *rows):
        click.echo(
            "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="baton")
