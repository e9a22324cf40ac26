"""The ``baton`` command: run a replica, show the leader, the jobs and their history.

Exit codes (:data:`EXIT_CODES`, shown by ``baton --help``; README, "Exit codes"): 0 success;
1 the backend could not be reached or failed, or the operation did not take effect; 2 a
usage or configuration error. Errors are one line, without a traceback.
"""

from __future__ import annotations

import difflib
import getpass
import json
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import click

from scheduler import __version__
from scheduler.backends.base import LeaseBackend
from scheduler.errors import (
    BackendError,
    BatonError,
    ConfigError,
    UserError,
    excerpt,
    printable,
)
from scheduler.firing.runs import RunRecord
from scheduler.jobs.spec import job_name_problem, load_jobs
from scheduler.leadership import controls as operator_controls
from scheduler.leadership.lease import LeaseRecord
from scheduler.ops.config import HISTORY_LIMIT_MAX, Settings, load_settings
from scheduler.ops.logs import configure

F = TypeVar("F", bound=Callable[..., Any])

#: Seconds a read-only command (leader, jobs, history) waits for the backend.
READ_TIMEOUT = 2.0


#: The longest error line ``baton`` prints, prefix included; bad input is echoed in excerpts.
ERROR_LINE_MAX = 400


def _fail(message: str, code: int) -> None:
    """Print ``baton: error: <message>`` as exactly one line on stderr and exit ``code``.

    Non-printable characters are escaped (a newline in an argument cannot forge a second
    line) and the line is cut at :data:`ERROR_LINE_MAX` characters.
    """
    line = "baton: error: " + printable(message.strip())
    if len(line) > ERROR_LINE_MAX:
        line = line[: ERROR_LINE_MAX - 3] + "..."
    click.echo(line, err=True)
    sys.exit(code)


def _usage_message(exc: click.UsageError) -> str:
    """``no such option: --frob (see 'baton status --help')``: click's error, on one line."""
    text = printable(exc.format_message().strip()).rstrip(".")
    if len(text) > 300:
        text = text[:297] + "..."
    text = text[:1].lower() + text[1:]
    ctx = exc.ctx
    if ctx is not None and ctx.help_option_names:
        helper = max(ctx.help_option_names, key=len)
        text += f" (see '{printable(ctx.command_path)[:80]} {helper}')"
    else:
        text += " (see 'baton --help')"
    return text


class BatonGroup(click.Group):
    """Turns every error into one line and an exit code, never a traceback or a usage dump.

    Baton's own errors are printed by :meth:`invoke`; click's usage errors (unknown option or
    command, bad option value, missing argument) by :meth:`main`, as one line with a pointer
    to ``--help`` instead of click's Usage/Try/Error block. Both exit 2.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()  # a bare ``baton`` asks for help, not a bad input: the help, exit 2
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            _fail(_usage_message(exc), 2)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        # Non-standalone click returns the exit code of --help/--version, or the command's
        # (unused) return value; a command that ran to its end succeeded.
        sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            _fail(str(exc), 2)
        except BackendError as exc:
            _fail(str(exc), 1)
        except BatonError as exc:
            _fail(str(exc), 1)


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
    """Load the settings and make the jobs modules importable from any directory.

    A jobs module is looked up in the current directory first (as ``python -m`` would), then
    in the config file's directory, then on ``PYTHONPATH``; a ``--jobs`` given as a path (a
    ``.py`` file or a package directory) is imported from there, wherever that is.
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


def _open_reader(settings: Settings) -> LeaseBackend:
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


#: The exit-code table of ``baton --help`` (the README's "Exit codes" says the same).
#: ``\b`` keeps click from re-wrapping it.
EXIT_CODES = """\b
Exit codes:
  0    success
  1    the backend could not be reached or failed, or the operation did
       not take effect (resign: no other replica took over)
  2    usage or configuration error: a bad option, config key, URL, job
       name or job definition; also a replica_id another live replica uses
  3    baton run with exit_on_lost: leadership was lost involuntarily
  130  baton run: a second SIGTERM or SIGINT cut the shutdown grace short
"""


@click.group(
    cls=BatonGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=EXIT_CODES,
)
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
    from scheduler.ops.replica import Replica

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
    replica.preflight()  # refused for good (credentials, ACL, read-only, schema): exit 2

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
        current = operator_controls.read(store, settings.cluster)
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
                    "paused": current.is_paused(spec.name),
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


class JobName(click.ParamType[str, Any]):
    """A job name as ``@singleton_job`` accepts it (:data:`~scheduler.jobs.spec.JOB_NAME_RULE`)."""

    name = "job"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        problem = job_name_problem(value)
        if problem is not None:
            problem = problem.replace("name must", "a job name must", 1)
            self.fail(f"{problem}, got {excerpt(value)}", param, ctx)
        return str(value)


@cli.command()
@config_options
@click.argument("job", type=JobName())
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1, max=HISTORY_LIMIT_MAX),
    help=f"Runs to show, newest first (1 to {HISTORY_LIMIT_MAX}).",
)
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
        current = operator_controls.read(store, settings.cluster)
    finally:
        store.close()
    leader_id = record.replica_id if record else None
    paused = sorted(current.paused)
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


#: Longest ``baton resign --wait``, in seconds. A handover takes at most renew_interval plus
#: shutdown_grace; an hour is more than any sensible grace, and a typo such as 1e9 is refused.
RESIGN_WAIT_MAX = 3600.0
#: Seconds between "still waiting" lines while ``baton resign`` waits for a handover.
PROGRESS_EVERY = 5.0
#: How much of a job name an operator's error line echoes.
NAME_EXCERPT = 60


class Seconds(click.FloatRange):
    """A number of seconds in ``[0, maximum]``; unlike FloatRange alone, never nan."""

    name = "seconds"

    def __init__(self, maximum: float) -> None:
        super().__init__(min=0, max=maximum)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        # nan compares false with both bounds, so the range check lets it through.
        if math.isnan(number):
            self.fail(f"{excerpt(value, NAME_EXCERPT)} is not a number of seconds", param, ctx)
        return number


@cli.command()
@config_options
@click.option(
    "--wait",
    "wait_seconds",
    default=30.0,
    show_default=True,
    type=Seconds(RESIGN_WAIT_MAX),
    help=f"Seconds to wait for another replica to take over (0: do not wait; "
    f"at most {RESIGN_WAIT_MAX:g}).",
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

    The leader sees the request with its controls (within 2 x renew_interval), lets running
    jobs finish (up to shutdown_grace), releases the lease and stays out for lease_ttl.
    With no other live replica nothing is asked (exit 1). Progress goes to stderr; exit 0
    once a different replica leads, 1 if none does within --wait.
    """
    settings = _settings(config_path, backend=backend, cluster=cluster)
    store = _open_reader(settings)
    successor, last_state = None, ""
    try:
        record = store.read(settings.cluster)
        if record is None:
            raise BatonError(f"cluster {settings.cluster!r} has no leader to resign")
        others = sorted(
            {m.replica_id for m in store.members(settings.cluster)} - {record.replica_id}
        )
        if not others:
            # Asking anyway would only make the leader step down and take the lease back a
            # lease_ttl later, with no fire run meanwhile: refuse, and say why at once.
            raise BatonError(
                f"no other live replica in cluster {settings.cluster!r} could take over "
                f"from {record.replica_id!r}; not resigning"
            )
        operator_controls.request_resign(store, settings.cluster, record.token)
        if wait_seconds:
            successor, last_state = _await_handover(
                store, settings.cluster, record, others, wait_seconds
            )
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
    elif not wait_seconds:
        click.echo(
            f"asked {record.replica_id} (token {record.token}) to step down "
            "(not waiting for the handover)"
        )
    if wait_seconds and successor is None:
        raise BatonError(
            f"no other replica took over from {record.replica_id!r} within {wait_seconds:g} s "
            f"(last seen: {last_state})"
        )


def _await_handover(
    store: LeaseBackend, cluster: str, old: LeaseRecord, others: Sequence[str], wait: float
) -> tuple[LeaseRecord | None, str]:
    """Wait up to ``wait`` s for a replica other than ``old``'s to lead; progress on stderr.

    Returns:
        The new leader's record (``None`` on timeout) and the last state seen. The old
        leader taking the lease back (a new token, same replica) is not a handover.
    """
    names = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    click.echo(
        f"asked {old.replica_id} (token {old.token}) to step down; waiting up to {wait:g} s "
        f"for another replica ({names}) to take over",
        err=True,
    )
    started = time.monotonic()
    deadline = started + wait
    shown, shown_at = f"{old.replica_id} still leads", started
    while time.monotonic() < deadline:
        current = store.read(cluster)
        if current is not None and current.replica_id != old.replica_id:
            return current, ""
        if current is None:
            state = f"no leader ({old.replica_id}'s lease released or expired)"
        elif current.token != old.token:
            state = f"{old.replica_id} leads again (token {current.token})"
        else:
            state = f"{old.replica_id} still leads"
        now = time.monotonic()
        if state != shown or now - shown_at >= PROGRESS_EVERY:
            click.echo(f"  {now - started:.1f} s: {state}", err=True)
            shown, shown_at = state, now
        time.sleep(0.05)
    return None, shown


def _check_job_known(
    job: str,
    settings: Settings,
    store: LeaseBackend,
    current: operator_controls.OperatorControls,
    configured: set[str] | None,
    resuming: bool,
) -> None:
    """Refuse a name no job has: not among ``configured`` (the jobs modules' jobs, ``None``
    when none was given), nor in any live replica's announced job list (nor, to resume,
    among the paused jobs).

    Raises:
        UserError: the name is unknown (with a did-you-mean), or nothing says which jobs
            exist (no jobs module given, no live replica announces its jobs).
    """
    known: set[str] = set(configured or ())
    announced = [m for m in store.members(settings.cluster) if m.jobs is not None]
    for member in announced:
        known |= set(member.jobs or ())
    if resuming:
        # A paused job may since have left the code: its pause must still be liftable.
        known |= current.paused
    if job in known:
        return
    if not known and not announced and configured is None:
        raise UserError(
            f"cannot check job name {excerpt(job, NAME_EXCERPT)}: no live replica of cluster "
            f"{settings.cluster!r} announces its jobs; pass --jobs MODULE"
        )
    close = difflib.get_close_matches(job, sorted(known), n=1)
    hint = f" (did you mean {excerpt(close[0], NAME_EXCERPT)}?)" if close else ""
    shown = excerpt(job, NAME_EXCERPT)
    raise UserError(f"no job named {shown} in cluster {settings.cluster!r}{hint}")


def _operator() -> str:
    """``user@host`` of whoever runs the command, for the record of who paused a job."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user with no name
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def _set_paused(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    jobs: Sequence[str],
    job: str,
    paused: bool,
    as_json: bool,
) -> None:
    # Only the intent is stored, no time: the leader records which fires it skipped
    # (scheduler.firing.pauses), so the operator's clock never decides what a catch-up runs.
    settings = _settings(config_path, backend=backend, cluster=cluster, jobs=list(jobs) or None)
    configured = None
    if "jobs" in settings.model_fields_set:  # given (flag, env, file), not the default
        configured = {spec.name for spec in load_jobs(settings.jobs)}
    store = _open_reader(settings)
    try:
        current = operator_controls.read(store, settings.cluster)
        _check_job_known(job, settings, store, current, configured, resuming=not paused)
        was_paused = current.is_paused(job)
        if paused and not was_paused:
            operator_controls.pause(store, settings.cluster, job, _operator())
        elif not paused and was_paused:
            operator_controls.resume(store, settings.cluster, job)
    finally:
        store.close()
    changed = paused != was_paused
    if as_json:
        doc = {"cluster": settings.cluster, "job": job, "paused": paused, "changed": changed}
        click.echo(json.dumps(doc))
    elif not changed:
        state = "already paused" if paused else "not paused"
        click.echo(f"job {job!r} is {state} in cluster {settings.cluster!r}; nothing changed")
    elif paused:
        click.echo(
            f"job {job!r} paused in cluster {settings.cluster!r}: the leader skips its fires "
            "from its next controls refresh (within 2 x renew_interval); none skipped runs later"
        )
    else:
        click.echo(
            f"job {job!r} resumed in cluster {settings.cluster!r}: the leader fires it again "
            "from its next controls refresh (within 2 x renew_interval); skipped fires stay skipped"
        )


def _pause_jobs_option(func: F) -> F:
    return click.option(
        "--jobs",
        "jobs",
        multiple=True,
        metavar="MODULE",
        help="Jobs module(s) to check JOB against, besides the live replicas' job lists.",
    )(func)


@cli.command()
@config_options
@_pause_jobs_option
@click.argument("job", type=JobName())
@json_option
def pause(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    jobs: Sequence[str],
    job: str,
    as_json: bool,
) -> None:
    """Stop firing JOB cluster-wide until `baton resume JOB`.

    The fires the leader skips meanwhile are recorded and never run later, not even by a new
    leader's catch-up. JOB must be a job of a live replica (or of --jobs); pausing a paused
    job changes nothing.
    """
    _set_paused(config_path, backend, cluster, jobs, job, True, as_json)


@cli.command()
@config_options
@_pause_jobs_option
@click.argument("job", type=JobName())
@json_option
def resume(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    jobs: Sequence[str],
    job: str,
    as_json: bool,
) -> None:
    """Fire JOB again after `baton pause JOB` (the fires skipped meanwhile stay skipped)."""
    _set_paused(config_path, backend, cluster, jobs, job, False, as_json)


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
