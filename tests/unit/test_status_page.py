"""The status page's rendering and its ASGI form, without servers: every value escaped,
failed runs marked, no write action, the refresh fallback, and the ASGI app's answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from html.parser import HTMLParser
from typing import Any

from scheduler.ops.http.page import HEADERS, asgi_status_app, render_page

EVIL = '<script>alert("x")</script>'


def doc() -> dict[str, Any]:
    failed = {
        "job": "a.<b>job<b>",
        "scheduled_time": "2026-01-01T00:00:00+00:00",
        "replica_id": "r1",
        "token": 3,
        "outcome": "error",
        "message": "RuntimeError",
        "lateness": 0.25,
    }
    return {
        "replica_id": "r2",
        "cluster": "c",
        "backend": "redis://***@host:6379/0",
        "version": "0.1.0",
        "is_leader": False,
        "backend_reachable": True,
        "leader": {
            "replica_id": "r1",
            "host": EVIL,
            "token": 3,
            "since": "2026-01-01T00:00:00+00:00",
            "ttl_left": 9.5,
        },
        "replicas": [
            {
                "replica_id": "r2",
                "host": EVIL,
                "version": "0.1.0",
                "started": "2026-01-01T00:00:00+00:00",
                "last_seen": "not a time " + EVIL,
            }
        ],
        "jobs": [
            {
                "name": "a.<b>job<b>",
                "schedule": "every 1s",
                "next_fire": "2026-01-01T00:00:01+00:00",
                "last_run": failed,
                "recent": [failed],
            }
        ],
        "recent_runs": [failed],
        "paused": ["a.<b>job<b>"],
    }


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_every_value_is_escaped_and_no_write_action() -> None:
    """Markup in names, hosts and times is text; the only script is the page's own; no form,
    button or input."""
    page = render_page(doc())
    assert EVIL not in page
    assert "&lt;script&gt;" in page and "a.&lt;b&gt;job&lt;b&gt;" in page
    parser = Tags()
    parser.feed(page)
    assert parser.tags.count("script") == 1
    assert not {"form", "button", "input"} & set(parser.tags)
    assert "<b>job" not in page


def test_failed_run_is_marked_and_the_refresh_works_without_javascript() -> None:
    """A failed run's rows carry outcome-error; a <noscript> meta refresh is the fallback;
    the CSP allows exactly the inline script."""
    page = render_page(doc(), refresh=7)
    assert 'class="job outcome-error paused"' in page
    assert 'class="run outcome-error"' in page
    assert '<noscript><meta http-equiv="refresh" content="7"></noscript>' in page
    assert 'data-refresh="7"' in page
    csp = dict(HEADERS)["Content-Security-Policy"]
    assert "script-src 'sha256-" in csp and "default-src 'none'" in csp


def test_no_leader_is_said() -> None:
    """Without a lease record the page says nobody leads (or why it cannot tell)."""
    assert "nobody leads right now" in render_page({**doc(), "leader": None})
    broken = render_page({**doc(), "leader": None, "cluster_error": EVIL})
    assert "unknown: &lt;script&gt;" in broken


def call(app: Any, method: str, path: str, root: str = "") -> tuple[int, dict[str, str], bytes]:
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": root + path, "root_path": root}
    asyncio.run(app(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, sent[1]["body"]


def test_asgi_app_serves_the_page_and_status_read_only() -> None:
    """Mounted under a prefix: / is the page, /status the JSON, other paths 404, writes 405,
    HEAD has no body, and a status that cannot be read is a 503 without details."""
    app = asgi_status_app(doc)
    code, headers, body = call(app, "GET", "/", "/baton")
    assert code == 200 and headers["content-type"].startswith("text/html")
    assert "content-security-policy" in headers and b"leader-name" in body
    code, headers, body = call(app, "GET", "/status", "/baton")
    assert code == 200 and json.loads(body)["replica_id"] == "r2"
    assert call(app, "GET", "/nope")[0] == 404
    code, headers, _ = call(app, "POST", "/")
    assert code == 405 and headers["allow"] == "GET, HEAD"
    assert call(app, "HEAD", "/")[2] == b""

    def broken() -> dict[str, Any]:
        raise RuntimeError("secret detail")

    code, _, body = call(asgi_status_app(broken), "GET", "/")
    assert code == 503 and b"secret" not in body


def test_many_jobs_are_capped_failing_first() -> None:
    """Above PAGE_JOBS_MAX jobs the page shows that many rows, failing jobs first, and says
    how many more /status lists."""
    from scheduler.ops.http.page import PAGE_JOBS_MAX

    base = doc()
    good = {**base["jobs"][0], "last_run": {**base["jobs"][0]["last_run"], "outcome": "ok"}}
    jobs = [{**good, "name": f"job.{i}", "recent": []} for i in range(PAGE_JOBS_MAX + 5)]
    jobs.append({**base["jobs"][0], "name": "job.failing"})
    page = render_page({**base, "jobs": jobs})
    assert page.count('class="job') == PAGE_JOBS_MAX
    assert 'data-job="job.failing"' in page and "and 6 more jobs" in page
