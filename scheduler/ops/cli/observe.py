"""The read-only commands: ``baton leader``, ``jobs``, ``history`` and ``status``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import click

from scheduler.jobs.spec import load_jobs
from scheduler.leadership import controls as operator_controls
from scheduler.ops.cli.loading import command_settings, open_reader
from scheduler.ops.cli.params import JobName, config_options, json_option
from scheduler.ops.cli.render import human_duration, run_row, table, when
from scheduler.ops.config import HISTORY_LIMIT_MAX


@click.command()
@config_options
@json_option
def leader(
    config_path: str | None, backend: str | None, cluster: str | None, as_json: bool
) -> None:
    """Show who leads: replica, host, since, fencing token, lease time left."""
    settings = command_settings(config_path, backend=backend, cluster=cluster)
    store = open_reader(settings)
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
            ("since", f"{when(record.since)} ({human_duration(ago)} ago)"),
            ("token", str(record.token)),
            (
                "lease",
                "held by session" if record.ttl_left is None else f"{record.ttl_left:.1f}s left",
            ),
        ]
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        click.echo(f"{key.ljust(width)}  {value}")


@click.command("jobs")
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
    settings = command_settings(
        config_path, backend=backend, cluster=cluster, jobs=list(jobs) or None
    )
    specs = load_jobs(settings.jobs)
    store = open_reader(settings)
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
                when(datetime.fromisoformat(item["next_fire"])) if item["next_fire"] else "-",
                when(datetime.fromisoformat(last_run["scheduled_time"])) if last_run else "-",
                last_run["replica_id"] if last_run else "-",
                last_run["outcome"] if last_run else "-",
            )
        )
    table(("JOB", "SCHEDULE", "NEXT FIRE", "LAST RUN", "REPLICA", "OUTCOME"), rows)


@click.command()
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
    settings = command_settings(config_path, backend=backend, cluster=cluster)
    store = open_reader(settings)
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
    table(
        ("SCHEDULED", "REPLICA", "TOKEN", "STARTED", "DURATION", "OUTCOME", "MESSAGE"),
        [run_row(run) for run in runs],
    )


@click.command()
@config_options
@json_option
def status(
    config_path: str | None, backend: str | None, cluster: str | None, as_json: bool
) -> None:
    """List the live replicas (presence records) and which one leads."""
    settings = command_settings(config_path, backend=backend, cluster=cluster)
    store = open_reader(settings)
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
            when(member.started),
            f"{human_duration((now - member.last_seen).total_seconds())} ago",
        )
        for member in members
    ]
    leading = leader_id or "(none)"
    click.echo(f"cluster {settings.cluster}: {len(members)} live replica(s), leader {leading}")
    table(("REPLICA", "ROLE", "HOST", "VERSION", "STARTED", "LAST SEEN"), rows)
    if paused:
        click.echo(f"paused jobs: {', '.join(paused)}")
