"""Bad-input catalogue, HTTP: what anyone with network reach can send to a replica's port.

One replica on the embedded SQLite backend serves every case of this module
(tests/harness/http_replica.py); one of its jobs fails with a secret in its exception
message. Each case sends raw bytes on a fresh connection and asserts:

* the status code (``0``: the server closes without answering, as it does for a connection
  that never sent a byte), within ``seconds`` (a malformed request line is refused at once,
  not after the head timeout);
* exactly one response, ``Connection: close``, a Content-Length that matches its body (none
  for HEAD), and no part of the request echoed back;
* no secret in the response, and ``/healthz`` still 200 within a second afterwards.

At the end of the module the replica stops cleanly (exit 0), its stderr holds JSON log lines
only and no traceback (other than its failing job's own), its stdout nothing.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from scheduler.ops import http
from tests.harness.http_replica import SECRET, HttpReplica, read_all, status_code

CRLF = b"\r\n"
#: A marker put into requests that no response may echo.
ECHO = "zz-echo-canary"


def get(target: bytes | str, *headers: bytes, method: bytes = b"GET") -> bytes:
    """A well-formed HTTP/1.1 request head for ``target`` with ``headers``."""
    raw = target.encode() if isinstance(target, str) else target
    lines = [method + b" " + raw + b" HTTP/1.1", b"Host: baton", *headers]
    return CRLF.join(lines) + CRLF + CRLF


@dataclass(frozen=True)
class HttpCase:
    """One catalogue entry.

    Attributes:
        id: a short stable name (the pytest id).
        request: the bytes sent on a fresh connection (then the test reads until closed).
        status: the expected status codes; ``0`` means closed without a response.
        says: a substring the response must contain.
        seconds: the answer must come within this many seconds.
        trickle: seconds between bytes sent (slowloris); 0 sends all at once.
        idle: idle connections held open while the request is made.
        head_only: the response must have no body (HEAD).
    """

    id: str
    request: bytes
    status: tuple[int, ...]
    says: str = ""
    seconds: float = 2.0
    trickle: float = 0.0
    idle: int = 0
    head_only: bool = False


HEAD_TIMEOUT = http.HEAD_TIMEOUT + 1.5

CASES = [
    # -- the endpoints, as they should be called -------------------------------------------
    HttpCase("healthz", get("/healthz"), (200,), says="ok"),
    HttpCase("readyz", get("/readyz"), (200,), says="ok"),
    HttpCase("metrics", get("/metrics"), (200,), says="baton_is_leader"),
    HttpCase("status", get("/status"), (200,), says='"jobs"'),
    HttpCase("head-healthz", get("/healthz", method=b"HEAD"), (200,), head_only=True),
    HttpCase("head-status", get("/status", method=b"HEAD"), (200,), head_only=True),
    HttpCase("http-1.0-no-host", b"GET /healthz HTTP/1.0\r\n\r\n", (200,), says="ok"),
    HttpCase("bare-lf-line-ends", b"GET /healthz HTTP/1.1\nHost: b\n\n", (200,), says="ok"),
    HttpCase("absolute-form", get("http://baton:8080/healthz"), (200,), says="ok"),
    HttpCase("query-string", get("/healthz?verbose=1&a=%00&b=" + "x" * 500), (200,)),
    HttpCase("keep-alive-asked", get("/healthz", b"Connection: keep-alive"), (200,)),
    # -- unknown paths: 404, nothing echoed ------------------------------------------------
    HttpCase("unknown-path", get(f"/{ECHO}"), (404,), says="/healthz"),
    # The read-only status page (issue 17): rendered from /status, so no secret either.
    HttpCase("root", get("/"), (200,)),
    HttpCase("trailing-slash", get("/healthz/"), (404,)),
    HttpCase("double-slash", get("//healthz"), (404,)),
    HttpCase("upper-case-path", get("/HEALTHZ"), (404,)),
    HttpCase("percent-encoded-path", get("/%68ealthz"), (404,)),
    HttpCase("path-traversal", get("/../../../../etc/passwd"), (404,)),
    HttpCase("path-traversal-encoded", get("/%2e%2e/%2e%2e/etc/passwd"), (404,)),
    HttpCase("path-traversal-backslash", get("/..\\..\\etc\\passwd"), (404,)),
    HttpCase("secret-in-query", get(f"/nope?password={SECRET}&{ECHO}"), (404,)),
    HttpCase("long-url-under-limit", get("/" + "a" * 3000), (404,)),
    HttpCase("long-url-over-limit", get("/" + "a" * 5000), (414,)),
    HttpCase("huge-url-no-line-end", b"GET /" + b"a" * 200_000, (414,)),
    # -- methods ---------------------------------------------------------------------------
    HttpCase("post", get("/healthz", method=b"POST"), (405,), says="GET, HEAD"),
    HttpCase("post-with-body", b"POST /status HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", (405,)),
    HttpCase("put", get("/status", method=b"PUT"), (405,)),
    HttpCase("delete", get("/status", method=b"DELETE"), (405,)),
    HttpCase("options-star", get("*", method=b"OPTIONS"), (405,)),
    HttpCase("connect", get("example.com:443", method=b"CONNECT"), (405,)),
    HttpCase("trace", get("/healthz", method=b"TRACE"), (405,)),
    HttpCase("unknown-method", get("/healthz", method=b"FROBNICATE"), (501,)),
    HttpCase("lower-case-get", get("/healthz", method=b"get"), (501,)),
    HttpCase("invalid-method-token", get("/healthz", method=b"GE(T"), (400,)),
    # -- malformed request lines: refused at once ------------------------------------------
    HttpCase("http-0.9", b"GET /healthz\r\n", (400,), says="HTTP/0.9"),
    HttpCase("http-0.9-no-crlf", b"GET /healthz\n", (400,)),
    HttpCase("http-2-version", b"GET /healthz HTTP/2.0\r\n\r\n", (505,)),
    HttpCase("http-3-version", b"GET /healthz HTTP/3\r\n\r\n", (400,)),
    HttpCase("lower-case-version", b"GET /healthz http/1.1\r\n\r\n", (400,)),
    HttpCase("version-garbage", b"GET /healthz HTTP/1.1.1\r\n\r\n", (400,)),
    HttpCase("missing-target", b"GET  HTTP/1.1\r\n\r\n", (400,)),
    HttpCase("extra-word", b"GET /healthz HTTP/1.1 extra\r\n\r\n", (400,)),
    HttpCase("tab-separators", b"GET\t/healthz\tHTTP/1.1\r\n\r\n", (400,)),
    HttpCase("target-without-slash", b"GET healthz HTTP/1.1\r\n\r\n", (400,)),
    HttpCase("empty-request-line", b"\r\n\r\n", (400,)),
    HttpCase("garbage-line", f"hello {ECHO}\r\n\r\n".encode(), (400,)),
    HttpCase("non-ascii-path-utf8", get("/héalthz".encode()), (400,)),
    HttpCase("non-ascii-path-latin1", get(b"/h\xe9althz"), (400,)),
    HttpCase("nul-in-request-line", b"GET /health\x00z HTTP/1.1\r\n\r\n", (400,)),
    HttpCase("nul-without-line-end", b"GET /\x00", (400,)),
    HttpCase("tls-client-hello", bytes.fromhex("16030100a5010000a10303") + bytes(64), (400,)),
    HttpCase("binary-noise", bytes(range(256)) * 4, (400,)),
    # -- header fields ---------------------------------------------------------------------
    HttpCase("header-without-colon", get("/healthz", b"NoColonHere"), (400,)),
    HttpCase("space-before-colon", get("/healthz", b"Host : baton"), (400,)),
    HttpCase("obs-fold", get("/healthz", b"X-A: 1", b" continued"), (400,)),
    HttpCase("nul-in-header-value", get("/healthz", b"X-A: a\x00b"), (400,)),
    HttpCase("non-ascii-header-value", get("/healthz", "X-Name: Jürgen".encode()), (200,)),
    HttpCase("empty-header-value", get("/healthz", b"X-Empty:"), (200,)),
    HttpCase("too-many-headers", get("/healthz", *(b"X-%d: 1" % i for i in range(70))), (431,)),
    HttpCase("one-huge-header", get("/healthz", b"X-Big: " + b"a" * 10_000), (431,)),
    HttpCase(
        "many-large-headers",
        get("/healthz", *(b"X-%d: " % i + b"b" * 300 for i in range(30))),
        (431,),
    ),
    HttpCase("cookie-with-secret", get("/healthz", f"Cookie: s={SECRET}".encode()), (200,)),
    HttpCase("get-with-body", get("/healthz", b"Content-Length: 4") + b"body", (200,)),
    HttpCase("chunked-get", get("/healthz", b"Transfer-Encoding: chunked") + b"0\r\n\r\n", (200,)),
    HttpCase("bad-content-length", get("/healthz", b"Content-Length: -1"), (200,)),
    HttpCase("pipelined", get("/healthz") + get("/status") + get("/metrics"), (200,)),
    # -- slow, idle and many connections ---------------------------------------------------
    HttpCase("connect-and-close", b"", (0,)),
    HttpCase("idle-connection", b"\x00IDLE", (0,), seconds=HEAD_TIMEOUT),
    HttpCase(
        "half-head-then-wait", b"GET /healthz HTTP/1.1\r\nHost: b", (408,), seconds=HEAD_TIMEOUT
    ),
    HttpCase(
        "slowloris",
        get("/healthz", b"X-Slow: " + b"s" * 40),
        (408,),
        seconds=HEAD_TIMEOUT,
        trickle=0.5,
    ),
    HttpCase(
        "slow-but-in-time",
        b"GET /healthz HTTP/1.0\r\n\r\n",
        (200,),
        seconds=HEAD_TIMEOUT,
        trickle=0.1,
    ),
    HttpCase("with-300-idle-connections", get("/healthz"), (200,), idle=300),
    HttpCase("status-with-300-idle-connections", get("/status"), (200,), idle=300),
]


@pytest.fixture(scope="module")
def replica(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpReplica]:
    """One replica for the module, once a run of its failing job is in /status."""
    r = HttpReplica(tmp_path_factory.mktemp("http") / "replica")
    try:
        deadline = time.monotonic() + 20
        while not _leaky_run_shown(r):
            assert time.monotonic() < deadline, "no failed run of http.leaky in /status"
            time.sleep(0.1)
        yield r
    finally:
        code = r.stop()
    assert code == 0, r.stderr()[-2000:]
    assert r.log_problems() == []
    assert r.stdout() == ""


def _leaky_run_shown(r: HttpReplica) -> bool:
    code, body = r.get("/status")
    if code != 200:
        return False
    jobs = {job["name"]: job for job in json.loads(body)["jobs"]}
    run = jobs["http.leaky"]["last_run"]
    return bool(run and run["outcome"] == "error")


def _send(replica: HttpReplica, case: HttpCase) -> tuple[bytes, float]:
    """Send ``case.request``; the bytes received until the server closed, and the time."""
    began = time.monotonic()
    with replica.connect() as sock:
        sock.settimeout(case.seconds + 5)
        if case.request == b"\x00IDLE":
            pass  # send nothing at all
        elif not case.request:
            return b"", time.monotonic() - began
        elif case.trickle:
            for byte in case.request:
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break  # closed by the server
                if select.select([sock], [], [], case.trickle)[0]:
                    break  # the server answered
        else:
            # The server may refuse before reading it all: then read what it said.
            with contextlib.suppress(OSError):
                sock.sendall(case.request)
        return read_all(sock), time.monotonic() - began


def _check_response(case: HttpCase, response: bytes) -> None:
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    fields = {name.lower(): value.strip() for name, _, value in (x.partition(":") for x in lines)}
    assert fields["connection"] == "close"
    assert response.count(b"Server: baton/") == 1, "more than one response on one connection"
    length = int(fields["content-length"])
    assert len(body) == (0 if case.head_only else length)
    assert case.says in (body.decode() if case.says else "")
    assert ECHO not in response.decode("ascii", "replace")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_http_bad_input(replica: HttpReplica, case: HttpCase) -> None:
    """The right status at once (or a close), one well-formed response, no echo, no secret,
    and /healthz still answers."""
    idle = [replica.connect() for _ in range(case.idle)]
    try:
        response, took = _send(replica, case)
    finally:
        for sock in idle:
            sock.close()
    shown = f"{case.id}: {response[:300]!r}"
    assert status_code(response) in case.status, shown
    assert took < case.seconds, f"{case.id}: answered after {took:.2f} s"
    assert SECRET not in response.decode("latin-1"), f"the secret was sent:\n{shown}"
    if response:
        _check_response(case, response)
    code, seconds = replica.timed_healthz()
    assert code == 200 and seconds < 1.0, f"/healthz after {case.id}: {code} in {seconds:.2f} s"


def test_at_least_25_cases() -> None:
    """The catalogue covers the classes of issue 10, item 9, with room to spare."""
    assert len(CASES) >= 25
    assert len({case.id for case in CASES}) == len(CASES)


def test_a_connection_refused_mid_request_still_gets_its_answer(replica: HttpReplica) -> None:
    """A 431 for a head still being sent arrives intact (the server reads and drops the rest
    before closing, so the close does not reset the connection)."""
    with socket.create_connection(("127.0.0.1", replica.port), timeout=10) as sock:
        sock.sendall(get("/healthz", b"X-Big: " + b"a" * 9000))
        assert select.select([sock], [], [], 10)[0], "no answer to the oversized head"
        with contextlib.suppress(OSError):
            sock.sendall(b"b" * 50_000)  # still sending after the answer
        assert status_code(read_all(sock)) == 431
