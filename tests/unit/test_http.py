"""scheduler/ops/http/: what /status shows of a failed run, request parsing, and the server's
worker pool with a stand-in status source whose /status hangs."""

from __future__ import annotations

import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from scheduler.backends.runs import RunRecord
from scheduler.ops import http
from scheduler.ops.config import load_settings
from scheduler.ops.http import (
    Refused,
    StatusServer,
    error_summary,
    parse_head,
    parse_request_line,
    public_run,
)

WHEN = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("message", "shown"),
    [
        ("RuntimeError: cannot connect with secret=hunter2", "RuntimeError"),
        ("ValueError: ", "ValueError"),
        ("SystemExit", "SystemExit"),
        ("KeyboardInterrupt", "KeyboardInterrupt"),
        ("Custom: a: b: c", "Custom"),
        ("job process exited with status 1", "job process exited with status 1"),
        ("not a type name: secret", "(hidden)"),
        ("", ""),
    ],
)
def test_error_summary_keeps_the_type_only(message: str, shown: str) -> None:
    """The exception type survives, its text never does."""
    assert error_summary(message) == shown


def test_public_run_hides_error_text_unless_opted_in() -> None:
    """An error's message is cut to its type by default; other outcomes are shown whole."""
    run = RunRecord("j", WHEN, "r1", 1, WHEN).finished("error", WHEN, "KeyError: 'hunter2'")
    assert public_run(run)["message"] == "KeyError"
    assert public_run(run, error_text=True)["message"] == "KeyError: 'hunter2'"
    lost = run.finished("lost", WHEN, "replica shut down before the run ended")
    assert public_run(lost)["message"] == "replica shut down before the run ended"


def test_status_error_text_setting_defaults_off_and_reads_the_environment() -> None:
    """http.status_error_text is false unless set (BATON_HTTP_STATUS_ERROR_TEXT)."""
    assert load_settings(environ={}).http.status_error_text is False
    on = load_settings(environ={"BATON_HTTP_STATUS_ERROR_TEXT": "true"})
    assert on.http.status_error_text is True


@pytest.mark.parametrize(
    ("line", "method", "path"),
    [
        (b"GET /healthz HTTP/1.1", "GET", "/healthz"),
        (b"HEAD /status?x=1 HTTP/1.0", "HEAD", "/status"),
        (b"GET http://host:8080/metrics HTTP/1.1", "GET", "/metrics"),
        (b"GET http://host HTTP/1.1", "GET", "/"),
        (b"GET /healthz#frag HTTP/1.1", "GET", "/healthz"),
    ],
)
def test_request_lines_that_parse(line: bytes, method: str, path: str) -> None:
    """Origin and absolute forms; the query and fragment are not part of the path."""
    request = parse_request_line(line)
    assert (request.method, request.path) == (method, path)


@pytest.mark.parametrize(
    ("head", "code"),
    [
        (b"GET /healthz", 400),
        (b"GET /a b HTTP/1.1", 400),
        (b"GET /healthz HTTP/2.0", 505),
        (b"POST / HTTP/1.1", 405),
        (b"BREW / HTTP/1.1", 501),
        (b"GET /\xff HTTP/1.1", 400),
        (b"GET /" + b"a" * 5000 + b" HTTP/1.1", 414),
        (b"GET / HTTP/1.1\r\nBad Header: x", 400),
        (b"GET / HTTP/1.1\r\n folded", 400),
        (b"GET / HTTP/1.1" + b"\r\nX: y" * 65, 431),
    ],
)
def test_heads_that_are_refused(head: bytes, code: int) -> None:
    """Each malformed head gets its status, and the refusal never echoes the input."""
    with pytest.raises(Refused) as refused:
        parse_head(head)
    assert refused.value.response.code == code
    assert b"healthz" not in refused.value.response.body


class _StuckReplica:
    """A status source whose /status hangs (a backend that does not answer) until
    ``release`` is set; probes answer from memory as always."""

    replica_id = "r1"

    def __init__(self) -> None:
        self.release = threading.Event()

    def status(self) -> dict[str, Any]:
        self.release.wait(30)
        return {"replica_id": self.replica_id}

    def metrics_text(self) -> bytes:
        return b"baton_is_leader 1.0\n"

    def liveness_problem(self) -> str | None:
        return None

    def readiness_problem(self) -> str | None:
        return None


def _request(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_probes_answer_while_every_worker_is_stuck_and_excess_requests_get_503() -> None:
    """/status hangs in both workers: /healthz still answers at once, requests beyond the
    queue are refused with 503 at once, the queued ones are served once /status answers."""
    replica = _StuckReplica()
    server = StatusServer(replica, "127.0.0.1", 0)
    server.start()
    results: list[bytes] = []
    try:
        callers = [
            threading.Thread(target=lambda: results.append(_request(server.port, "/status")))
            for _ in range(http.MAX_QUEUED + 4)
        ]
        for caller in callers:
            caller.start()
        deadline = time.monotonic() + 10
        while len(results) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [r.split(b" ", 2)[1] for r in results] == [b"503"] * 4
        began = time.monotonic()
        assert _request(server.port, "/healthz").endswith(b"\r\n\r\nok\n")
        assert _request(server.port, "/metrics").split(b" ", 2)[1] == b"503"  # queue full
        assert time.monotonic() - began < 0.5
        replica.release.set()
        for caller in callers:
            caller.join(10)
        assert (
            sorted(r.split(b" ", 2)[1] for r in results)
            == [b"200"] * http.MAX_QUEUED + [b"503"] * 4
        )
        assert _request(server.port, "/metrics").split(b" ", 2)[1] == b"200"
    finally:
        replica.release.set()
        server.stop()
