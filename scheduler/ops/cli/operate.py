"""The operator commands: ``baton resign``, ``pause`` and ``resume``.

They only write intents (:mod:`scheduler.leadership.controls`); the leader acts on them at
its next controls refresh.
"""

from __future__ import annotations

import difflib
import getpass
import json
import os
import socket
import time
from collections.abc import Sequence

import click

from scheduler.backends.base import LeaseBackend
from scheduler.errors import BatonError, UserError, excerpt
from scheduler.jobs.spec import load_jobs
from scheduler.leadership import controls as operator_controls
from scheduler.leadership.lease import LeaseRecord
from scheduler.ops.cli.loading import command_settings, open_reader
from scheduler.ops.cli.params import NAME_EXCERPT, F, JobName, Seconds, config_options, json_option
from scheduler.ops.config import Settings

#: Longest ``baton resign --wait``, in seconds. A handover takes at most renew_interval plus
#: shutdown_grace; an hour is more than any sensible grace, and a typo such as 1e9 is refused.
RESIGN_WAIT_MAX = 3600.0
#: Seconds between "still waiting" lines while ``baton resign`` waits for a handover.
PROGRESS_EVERY = 5.0


@click.command()
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
    settings = command_settings(config_path, backend=backend, cluster=cluster)
    store = open_reader(settings)
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
    """Pause (``paused``) or resume ``job`` cluster-wide once the name is known to be a
    job, and print what changed (nothing, if it already was so)."""
    # Only the intent is stored, no time: the leader records which fires it skipped
    # (scheduler.firing.pauses), so the operator's clock never decides what a catch-up runs.
    settings = command_settings(
        config_path, backend=backend, cluster=cluster, jobs=list(jobs) or None
    )
    configured = None
    if "jobs" in settings.model_fields_set:  # given (flag, env, file), not the default
        configured = {spec.name for spec in load_jobs(settings.jobs)}
    store = open_reader(settings)
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


@click.command()
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


@click.command()
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
