"""What each endpoint answers, from a :class:`StatusSource`; what /status shows of a run."""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST

from scheduler.backends.runs import RunRecord
from scheduler.ops.http.page import CONTENT_TYPE, HEADERS, render_page
from scheduler.ops.http.protocol import Request, Response

#: Endpoints answered by the selector thread: in-memory state only, never a backend call.
PROBES = ("/healthz", "/readyz")
#: Endpoints answered by a worker: they may take a while (rendering, backend reads). ``/``
#: is the read-only status page (scheduler/ops/http/page.py), rendered from /status.
POOLED = ("/metrics", "/status", "/")
ENDPOINTS = (*PROBES, *POOLED)

_TYPE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NOT_FOUND = "not found: try /, /healthz, /readyz, /metrics or /status"


def error_summary(message: str) -> str:
    """The part of a run's error message /status shows by default: the exception type.

    History records ``Type: text`` (scheduler.firing.execution.describe_error); the text is dropped.
    A message without ``:`` is Baton's own (``job process exited with status 1``) or a bare
    type name, shown whole; anything else is hidden.
    """
    head, colon, _ = message.partition(":")
    if not colon:
        return message
    return head if _TYPE_NAME.fullmatch(head) else "(hidden)"


def public_run(run: RunRecord, error_text: bool = False) -> dict[str, Any]:
    """``run`` as /status shows it: an error's message cut to its type unless ``error_text``."""
    doc = run.to_dict()
    if run.outcome == "error" and not error_text:
        doc["message"] = error_summary(run.message)
    # Seconds the run started after its instant (a claim not yet started has none).
    late = (run.started - run.scheduled_time).total_seconds()
    doc["lateness"] = None if run.outcome == "claimed" else round(late, 3)
    return doc


class StatusSource(Protocol):
    """What the endpoints read of a replica (:class:`scheduler.ops.replica.Replica` is one).

    Every method answers from memory except :meth:`status`, which may read the backend
    (bounded); the probes are answered on the selector thread, so they must never block.
    """

    @property
    def replica_id(self) -> str:
        """The replica's id, for the server's log lines."""
        ...

    def liveness_problem(self) -> str | None:
        """Why the replica should be restarted (``/healthz`` answers 503), or ``None``."""
        ...

    def readiness_problem(self) -> str | None:
        """Why the replica is not ready (``/readyz`` answers 503), or ``None``."""
        ...

    def metrics_text(self) -> bytes:
        """The Prometheus text exposition (``/metrics``)."""
        ...

    def status(self) -> dict[str, Any]:
        """The ``/status`` document (failed runs shown through :func:`public_run`)."""
        ...


def route(source: StatusSource, request: Request) -> Response:
    """The response to a well-formed GET or HEAD request."""
    path = request.path
    if path == "/healthz":
        problem = source.liveness_problem()
        return Response.text(503 if problem else 200, problem or "ok")
    if path == "/readyz":
        problem = source.readiness_problem()
        return Response.text(503 if problem else 200, problem or "ok")
    if path == "/metrics":
        return Response(200, source.metrics_text(), CONTENT_TYPE_LATEST)
    if path == "/status":
        body = json.dumps(source.status(), indent=2).encode()
        return Response(200, body, "application/json")
    if path == "/":
        page = render_page(source.status()).encode()
        return Response(200, page, CONTENT_TYPE, HEADERS)
    return Response.text(404, _NOT_FOUND)
