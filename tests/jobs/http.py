"""Jobs of the replica that the HTTP tests attack (tests/harness/http_replica.py): one that
succeeds and one whose exception message carries a secret, each every second."""

from __future__ import annotations

from scheduler import JobContext, singleton_job

#: The secret in the failing job's exception message; no HTTP response may show it.
SECRET = "secret=hunter2"


@singleton_job(every="1s", name="http.ok")
def ok(ctx: JobContext) -> None:
    """Succeeds."""


@singleton_job(every="1s", name="http.leaky")
def leaky(ctx: JobContext) -> None:
    """Fails with a secret in its message, as a careless job does."""
    raise RuntimeError(f"cannot connect with {SECRET}")
