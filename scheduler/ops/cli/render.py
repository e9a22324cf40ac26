"""How the commands show things to a person: times, durations, aligned tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import click

from scheduler.backends.runs import RunRecord


def run_row(run: RunRecord) -> tuple[str, ...]:
    """One row of ``baton history``: scheduled, replica, token, started, duration, outcome,
    message (cut at 60 characters)."""
    if run.ended is None:
        duration = "-"
    else:
        duration = human_duration((run.ended - run.started).total_seconds())
    return (
        when(run.scheduled_time),
        run.replica_id,
        str(run.token),
        when(run.started, precise=True),
        duration,
        run.outcome,
        run.message[:60],
    )


def when(moment: datetime, precise: bool = False) -> str:
    """``moment`` in UTC, ``2026-01-01 03:00:00Z`` (with milliseconds when ``precise``)."""
    fmt = "%Y-%m-%d %H:%M:%S.%f" if precise else "%Y-%m-%d %H:%M:%S"
    text = moment.astimezone(UTC).strftime(fmt)
    return (text[:-3] if precise else text) + "Z"


def human_duration(seconds: float) -> str:
    """``250ms``, ``12.5s``, ``30m`` or ``4.0h``."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print ``rows`` under ``headers`` in columns two spaces apart."""
    widths = [
        max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=False)
    ]
    for row in (headers, *rows):
        click.echo(
            "  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        )
