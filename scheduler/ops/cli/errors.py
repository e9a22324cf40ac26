"""How ``baton`` fails: exit codes and one error line, never a traceback or a usage dump."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from scheduler.errors import BackendError, BatonError, UserError, printable

#: The longest error line ``baton`` prints, prefix included; bad input is echoed in excerpts.
ERROR_LINE_MAX = 400

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


def fail(message: str, code: int) -> NoReturn:
    """Print ``baton: error: <message>`` as exactly one line on stderr and exit ``code``.

    Non-printable characters are escaped (a newline in an argument cannot forge a second
    line) and the line is cut at :data:`ERROR_LINE_MAX` characters.
    """
    line = "baton: error: " + printable(message.strip())
    if len(line) > ERROR_LINE_MAX:
        line = line[: ERROR_LINE_MAX - 3] + "..."
    click.echo(line, err=True)
    sys.exit(code)


def usage_message(exc: click.UsageError) -> str:
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
            fail(usage_message(exc), 2)
        except click.ClickException as exc:
            fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            fail("aborted", 1)
        # Non-standalone click returns the exit code of --help/--version, or the command's
        # (unused) return value; a command that ran to its end succeeded.
        sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as exc:
            fail(str(exc), 2)
        except BackendError as exc:
            fail(str(exc), 1)
        except BatonError as exc:
            fail(str(exc), 1)
