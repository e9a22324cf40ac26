"""``baton schema``: the PostgreSQL backend's DDL for a DBA, and a check of what is there.

A team whose application role may not create tables applies the printed SQL once (as the
schema's owner) and runs replicas with ``create_schema=false``: then a missing or outdated
schema is one clear error (exit 2) and nothing is ever created by a replica.
"""

from __future__ import annotations

import re

import click

from scheduler.backends import postgresql
from scheduler.errors import ConfigError, excerpt
from scheduler.ops.cli.loading import command_settings, open_reader
from scheduler.ops.cli.params import config_options

# A role name printed into GRANT statements: an SQL identifier, nothing to quote.
_ROLE = re.compile(r"[a-z_][a-z0-9_$]{0,62}")


@click.command("schema")
@config_options
@click.option(
    "--print-sql",
    "print_sql",
    is_flag=True,
    help="Print the DDL (tables and functions, one transaction) for the URL's schema.",
)
@click.option(
    "--grant-to",
    "grant_to",
    default=None,
    metavar="ROLE",
    help="With --print-sql: also print the GRANTs the role ROLE needs (and nothing more).",
)
def schema_command(
    config_path: str | None,
    backend: str | None,
    cluster: str | None,
    print_sql: bool,
    grant_to: str | None,
) -> None:
    """Print the PostgreSQL schema's DDL (--print-sql), or check the schema's version.

    Without --print-sql it connects, creates nothing, and exits 0 when the schema is
    there at this Baton's version (2 when it is missing, older or newer). Only for
    postgresql:// backends.
    """
    settings = command_settings(config_path, backend=backend, cluster=cluster)
    if settings.backend.scheme not in ("postgresql", "postgres"):
        raise ConfigError(
            "backend",
            f"baton schema is for postgresql:// backends; {settings.backend.shown} creates "
            "its own structure",
        )
    target = postgresql.parse_url(settings.backend.reveal())
    if grant_to is not None and not print_sql:
        raise click.UsageError("--grant-to goes with --print-sql")
    if print_sql:
        if grant_to is not None and not _ROLE.fullmatch(grant_to):
            raise click.UsageError(
                f"--grant-to {excerpt(grant_to, 40)}: not a lower-case SQL role name"
            )
        click.echo(postgresql.script(target.schema, grant_to), nl=False)
        return
    reader = open_reader(settings)  # checks the version; creates nothing
    reader.close()
    click.echo(
        f"schema {target.schema} is at Baton schema version {postgresql.SCHEMA_VERSION} "
        f"on {target.shown}"
    )


__all__ = ["schema_command"]
