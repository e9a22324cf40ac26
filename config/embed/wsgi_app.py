"""The WSGI application of the gunicorn recipe (gunicorn_hooks.py): any app will do."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from scheduler.ops.embed import current


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    replica = current()
    leads = replica is not None and replica.is_leader()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"leader\n" if leads else b"follower\n"]
