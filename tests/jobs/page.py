"""Jobs of the status page's browser test (tests/integrations/test_status_page.py): one that
succeeds, one that fails with a secret in its message (which the page must not show), and
one whose name holds markup (``<`` and ``>`` are valid in job names: the page must show
the name as text, never as HTML)."""

from __future__ import annotations

from scheduler import JobContext, singleton_job

SECRET = "s3cr3t-in-a-message"
MARKUP_NAME = "page.<b>bold<b>"


@singleton_job(every="1s", name="page.ok", catch_up="none")
def ok(ctx: JobContext) -> None:
    """Succeeds."""


@singleton_job(every="1s", name="page.failing", catch_up="none")
def failing(ctx: JobContext) -> None:
    """Fails, with a secret in the message."""
    raise RuntimeError(f"cannot connect with password {SECRET}")


@singleton_job(every="2s", name=MARKUP_NAME, catch_up="none")
def markup(ctx: JobContext) -> None:
    """Succeeds; its name is markup."""
