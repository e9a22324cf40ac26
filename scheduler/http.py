"""Per-replica HTTP endpoints: /healthz, /readyz, /metrics, /status (stdlib server).

Probes answer from in-memory state only (no backend call), so a slow backend never makes
Kubernetes kill a healthy replica; /status reads the last run of each job from the backend
(bounded), for humans and tools.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST

from scheduler import __version__
from scheduler.errors import BackendError

if TYPE_CHECKING:
    from scheduler.replica import Replica


def status(replica: Replica) -> dict[str, Any]:
    """The /status document: who this replica is, whether it leads, and its jobs."""
    elector, runner = replica.elector, replica.runner
    term = elector.current_term()
    now = datetime.now(UTC)
    jobs = []
    for spec in runner.specs:
        next_fire = spec.next_fire(now)
        item: dict[str, Any] = {
            "name": spec.name,
            "schedule": spec.schedule,
            "next_fire": next_fire.isoformat() if next_fire else None,
            "last_run": None,
        }
        try:
            last = replica.backend.history(replica.settings.cluster, spec.name, 1)
            item["last_run"] = last[0].to_dict() if last else None
        except BackendError as exc:
            item["last_run_error"] = str(exc)
        jobs.append(item)
    return {
        "replica_id": replica.settings.replica_id,
        "cluster": replica.settings.cluster,
        "backend": replica.backend.url,
        "version": __version__,
        "is_leader": term is not None,
        "token": term.token if term else None,
        "lease_time_left": round(term.lease_deadline() - elector.clock.monotonic(), 3)
        if term
        else None,
        "backend_reachable": elector.backend_ok,
        "jobs": jobs,
    }


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        replica = self.server.replica
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            problem = replica.liveness_problem()
            self._text(503 if problem else 200, problem or "ok")
        elif path == "/readyz":
            problem = replica.readiness_problem()
            self._text(503 if problem else 200, problem or "ok")
        elif path == "/metrics":
            self._send(200, replica.metrics.render(), CONTENT_TYPE_LATEST)
        elif path == "/status":
            body = json.dumps(status(replica), indent=2).encode()
            self._send(200, body, "application/json")
        else:
            self._text(404, "not found: try /healthz, /readyz, /metrics or /status")

    def _text(self, code: int, text: str) -> None:
        self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8")

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the logs; stay quiet."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], replica: Replica) -> None:
        self.replica = replica
        super().__init__(address, _Handler)


class StatusServer:
    """Serves the endpoints of ``replica`` on ``host:port`` from a background thread."""

    def __init__(self, replica: Replica, host: str, port: int) -> None:
        self._server = _Server((host, port), replica)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="baton-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
