"""The read-only status page: the /status document as HTML for a person, at ``GET /``.

What it shows: who leads (replica, host, token, since when, lease margin), the live
replicas, every job with its next fire, pause and last outcomes, and the recent runs with
their outcome and lateness; failed runs are highlighted. It is rendered from
:meth:`~scheduler.ops.replica.Replica.status`, so it shows exactly what /status shows: a
failed run's exception type only unless ``http.status_error_text``, and never the backend's
credentials (its URL is the redacted one).

Rendering is on the server, every value through :func:`html.escape` (job names, replica
ids and messages come from users and from other replicas), so the page works with
JavaScript disabled (a ``<meta refresh>`` inside ``<noscript>`` reloads it). With
JavaScript, a small inline script re-fetches the page every :data:`REFRESH` seconds and
swaps its ``<main>`` in place (parsed with ``DOMParser``, never executed): no full reload,
and one renderer, so the escaping lives in one place. A Content-Security-Policy allows that
one script (by its hash) and same-origin fetches only.

There is no form, no link that changes anything, and no write action: methods other than
GET and HEAD are refused.

The same page can be mounted in the host's ASGI application (:func:`asgi_status_app`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from html import escape
from typing import Any

#: Seconds between refreshes of the page (by the script, or by ``<meta refresh>`` without
#: JavaScript). Shorter shows a fire sooner but reads the backend more often (each refresh
#: is one /status: a few bounded reads).
REFRESH = 3

_SCRIPT = """
(function () {
  var main = document.querySelector("main");
  var every = Number(main.getAttribute("data-refresh")) * 1000;
  function swap() {
    fetch(window.location.href, {cache: "no-store", credentials: "same-origin"})
      .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        if (fresh) { main.replaceWith(fresh); main = fresh; }
        document.body.classList.remove("stale");
      })
      .catch(function () { document.body.classList.add("stale"); })
      .finally(function () { setTimeout(swap, every); });
  }
  document.body.classList.add("live");
  setTimeout(swap, every);
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()

#: Headers of the page: only the inline script above may run, fetches go to this origin,
#: and the page is never framed, sniffed or given a referrer.
HEADERS: tuple[tuple[str, str], ...] = (
    (
        "Content-Security-Policy",
        f"default-src 'none'; script-src 'sha256-{_SCRIPT_HASH}'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
)
CONTENT_TYPE = "text/html; charset=utf-8"
#: Job rows on the page at most (failing ones first); /status lists every job. 10,000 rows
#: are a 2.5 MB page re-fetched every REFRESH seconds.
PAGE_JOBS_MAX = 1000

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:12px 24px;display:flex;gap:16px;align-items:baseline}
header h1{font-size:18px;margin:0}header .live{font-size:12px;color:#9fb3c8}
body.stale header .live::after{content:" (refresh failed: showing the last answer)";color:#f8b4b4}
main{padding:16px 24px;display:grid;gap:16px}
section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 16px}
h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f3;vertical-align:top}
th{font-weight:600;color:#4a5568;font-size:12px;text-transform:uppercase}
code{font:12px ui-monospace,monospace}
.leader-name{font-size:20px;font-weight:700}
.muted{color:#718096}
.badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:12px;margin-right:2px}
.outcome-ok .badge,.badge.outcome-ok{background:#d9f2e1;color:#1e6b3a}
.badge.outcome-error{background:#c53030;color:#fff}
.badge.outcome-lost{background:#f6e05e;color:#5f370e}
.badge.outcome-running,.badge.outcome-claimed{background:#bee3f8;color:#2a4365}
tr.outcome-error{background:#fde8e8}tr.outcome-error td:first-child{border-left:4px solid #c53030}
tr.outcome-lost{background:#fffbea}
tr.paused td{color:#a0aec0}
.warn{color:#c53030;font-weight:600}
"""


def _e(value: object) -> str:
    """Any value as escaped HTML text (``None`` as a dash)."""
    return "&mdash;" if value is None else escape(str(value), quote=True)


def _when(iso: str | None) -> str:
    """An ISO-8601 instant as ``2026-11-30 16:40:02Z`` (escaped), or a dash."""
    if not iso:
        return "&mdash;"
    try:
        moment = datetime.fromisoformat(iso).astimezone(UTC)
    except ValueError:
        return _e(iso)
    return _e(moment.strftime("%Y-%m-%d %H:%M:%S") + "Z")


def _outcome(outcome: object) -> str:
    """The CSS class of an outcome (only known outcomes make a class)."""
    known = ("ok", "error", "lost", "running", "claimed")
    return f"outcome-{outcome}" if outcome in known else "outcome-unknown"


def _badge(run: dict[str, Any]) -> str:
    outcome = run.get("outcome")
    title = f"{run.get('scheduled_time', '')} {run.get('message') or ''}".strip()
    return f'<span class="badge {_outcome(outcome)}" title="{_e(title)}">{_e(outcome)}</span>'


def _seconds(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "&mdash;"
    return _e(f"{value:.3f} s")


def _table(section: str, title: str, headers: tuple[str, ...], rows: list[str], empty: str) -> str:
    """A titled section holding a table of ``rows`` (HTML already), or one row saying
    ``empty`` when there are none."""
    head = "".join(f"<th>{header}</th>" for header in headers)
    body = "".join(rows) or f'<tr><td colspan="{len(headers)}" class="muted">{empty}</td></tr>'
    return f'<section id="{section}"><h2>{title}</h2><table><tr>{head}</tr>{body}</table></section>'


def _leader(doc: dict[str, Any]) -> str:
    leader = doc.get("leader")
    if not isinstance(leader, dict):
        why = doc.get("cluster_error")
        text = f"unknown: {_e(why)}" if why else "nobody leads right now"
        return f'<section id="leader"><h2>Leader</h2><p class="warn">{text}</p></section>'
    margin = leader.get("ttl_left")
    lines = [
        f'<span class="leader-name" id="leader-name">{_e(leader.get("replica_id"))}</span>',
        f'<span class="muted">on {_e(leader.get("host"))}</span>',
        "<table><tr><th>token</th><th>since</th><th>lease margin</th></tr>",
        f'<tr><td id="leader-token">{_e(leader.get("token"))}</td>'
        f"<td>{_when(leader.get('since'))}</td><td>{_seconds(margin)}"
        '<span class="muted"> until the lease expires unless renewed</span></td></tr></table>',
    ]
    return '<section id="leader"><h2>Leader</h2>' + " ".join(lines) + "</section>"


def _replicas(doc: dict[str, Any]) -> str:
    leader = doc.get("leader") or {}
    rows = []
    for member in doc.get("replicas") or []:
        leads = member.get("replica_id") == leader.get("replica_id")
        rows.append(
            f'<tr class="replica{" leads" if leads else ""}">'
            f"<td>{_e(member.get('replica_id'))}{' <b>(leader)</b>' if leads else ''}</td>"
            f"<td>{_e(member.get('host'))}</td><td>{_e(member.get('version'))}</td>"
            f"<td>{_when(member.get('started'))}</td><td>{_when(member.get('last_seen'))}</td>"
            "</tr>"
        )
    listed = {member.get("replica_id") for member in doc.get("replicas") or []}
    if leader.get("replica_id") and leader.get("replica_id") not in listed:
        # A replica that won the lease at once announces its presence with its first
        # renewal: show it meanwhile, from the lease record.
        rows.insert(
            0,
            f'<tr class="replica leads"><td>{_e(leader.get("replica_id"))} <b>(leader)</b></td>'
            f'<td>{_e(leader.get("host"))}</td><td colspan="3" class="muted">'
            "presence not announced yet</td></tr>",
        )
    headers = ("replica", "host", "version", "started", "last seen")
    return _table("replicas", "Replicas", headers, rows, "none seen")


def _jobs(doc: dict[str, Any]) -> str:
    paused = set(doc.get("paused") or [])
    rows = []
    jobs = list(doc.get("jobs") or [])
    if len(jobs) > PAGE_JOBS_MAX:  # failing jobs first, then by name (a stable sort)
        jobs.sort(key=lambda job: (job.get("last_run") or {}).get("outcome") != "error")
    for job in jobs[:PAGE_JOBS_MAX]:
        name = job.get("name")
        recent = job.get("recent") or ([job["last_run"]] if job.get("last_run") else [])
        # The row's colour is the last run that ended (a newer one may be claimed or
        # running already: its badge shows that).
        ended = [run for run in recent if run.get("outcome") in ("ok", "error", "lost")]
        last = ended[0] if ended else (recent[0] if recent else None)
        classes = ["job"]
        if last is not None:
            classes.append(_outcome(last.get("outcome")))
        if name in paused:
            classes.append("paused")
        badges = "".join(_badge(run) for run in recent) or '<span class="muted">no run yet</span>'
        message = _e(last.get("message")) if last and last.get("message") else ""
        rows.append(
            f'<tr class="{" ".join(classes)}" data-job="{_e(name)}">'
            f"<td><code>{_e(name)}</code>{' <b>paused</b>' if name in paused else ''}</td>"
            f"<td>{_e(job.get('schedule'))}</td><td>{_when(job.get('next_fire'))}</td>"
            f"<td>{badges}</td><td>{message}</td></tr>"
        )
    if len(jobs) > PAGE_JOBS_MAX:
        rows.append(
            f'<tr><td colspan="5" class="muted">and {len(jobs) - PAGE_JOBS_MAX} more jobs: '
            "see /status</td></tr>"
        )
    headers = ("job", "schedule", "next fire", "last runs (newest first)", "last message")
    return _table("jobs", "Jobs", headers, rows, "no jobs")


def _runs(doc: dict[str, Any]) -> str:
    rows = []
    for run in doc.get("recent_runs") or []:
        rows.append(
            f'<tr class="run {_outcome(run.get("outcome"))}">'
            f"<td><code>{_e(run.get('job'))}</code></td><td>{_when(run.get('scheduled_time'))}</td>"
            f"<td>{_e(run.get('replica_id'))}</td><td>{_e(run.get('token'))}</td>"
            f"<td>{_badge(run)}</td><td>{_seconds(run.get('lateness'))}</td>"
            f"<td>{_e(run.get('message') or '')}</td></tr>"
        )
    headers = ("job", "scheduled", "replica", "token", "outcome", "late by", "message")
    return _table("runs", "Recent runs", headers, rows, "no runs yet")


def _pauses(doc: dict[str, Any]) -> str:
    paused = doc.get("paused") or []
    items = "".join(f"<li><code>{_e(name)}</code></li>" for name in paused)
    body = f"<ul>{items}</ul>" if items else '<p class="muted">no job is paused</p>'
    return f'<section id="paused"><h2>Paused jobs</h2>{body}</section>'


def render_page(doc: dict[str, Any], refresh: int = REFRESH) -> str:
    """The status page for the /status document ``doc`` (every value escaped)."""
    me = doc.get("replica_id")
    here = "this replica leads" if doc.get("is_leader") else "this replica follows"
    backend = (
        ""
        if doc.get("backend_reachable", True)
        else ' <span class="warn">backend unreachable</span>'
    )
    main = (
        f'<main data-refresh="{int(refresh)}">'
        f'<p class="muted">Served by <b id="served-by">{_e(me)}</b> ({here}){backend}, '
        f"Baton {_e(doc.get('version'))}, backend <code>{_e(doc.get('backend'))}</code>, "
        f"at {_when(datetime.now(UTC).isoformat())}. Read-only.</p>"
        f"{_leader(doc)}{_replicas(doc)}{_jobs(doc)}{_runs(doc)}{_pauses(doc)}</main>"
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Baton: {_e(doc.get('cluster'))}</title>"
        f'<noscript><meta http-equiv="refresh" content="{int(refresh)}"></noscript>'
        f"<style>{_STYLE}</style></head><body>"
        f"<header><h1>Baton &middot; cluster {_e(doc.get('cluster'))}</h1>"
        f'<span class="live">refreshes every {int(refresh)} s</span></header>'
        f"{main}<script>{_SCRIPT}</script></body></html>"
    )


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def asgi_status_app(
    status: Callable[[], dict[str, Any]], refresh: int = REFRESH
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The page (``/``) and the /status JSON (``/status``) as an ASGI application.

    Mount it in the host application (Starlette/FastAPI: ``app.mount("/baton", app)``).
    ``status()`` reads the backend, so it runs in a thread, never on the event loop.
    """

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets: nothing to do here
        method, path = scope.get("method", "GET"), scope.get("path", "/")
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # Starlette keeps the mount prefix in path
            path = path[len(root) :]
        headers: list[tuple[bytes, bytes]] = [(b"cache-control", b"no-store")]
        if method not in ("GET", "HEAD"):
            code, body, kind = 405, b"method not allowed: use GET, HEAD\n", "text/plain"
            headers.append((b"allow", b"GET, HEAD"))
        elif path not in ("", "/", "/status"):
            code, body, kind = 404, b"not found: try / or /status\n", "text/plain"
        else:
            try:
                doc = await asyncio.to_thread(status)
            except Exception:
                code, body, kind = 503, b"status not available yet\n", "text/plain"
            else:
                code = 200
                if path == "/status":
                    body, kind = json.dumps(doc, indent=2).encode(), "application/json"
                else:
                    body, kind = render_page(doc, refresh).encode(), CONTENT_TYPE
                    headers += [(k.lower().encode(), v.encode()) for k, v in HEADERS]
        if not kind.startswith("text/html") and kind != "application/json":
            kind += "; charset=utf-8"
        headers += [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})

    return app
