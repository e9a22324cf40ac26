"""Per-replica HTTP endpoints: /healthz, /readyz, /metrics, /status.

Probes answer from in-memory state only (no backend call), so a slow backend never makes
Kubernetes kill a healthy replica; /status reads the last run of each job from the backend
(bounded), for humans and tools. /status shows a failed run's exception type, not its text
(``http.status_error_text`` opts in): exception messages can carry secrets, and nothing here
asks who is calling.

The server stays up under abuse from anyone with network reach — thousands of idle
connections, slowloris, oversized or malformed requests — with bounded threads, memory and
file descriptors:

* one selector thread accepts connections and reads request heads without blocking;
* each connection must deliver its whole request head within :data:`HEAD_TIMEOUT` seconds
  and :data:`MAX_HEAD` bytes, however slowly it trickles in; a malformed request line is
  refused as soon as it is seen;
* at most :data:`MAX_CONNECTIONS` connections are read at a time; a new one evicts the
  oldest, so a probe (which sends its request at once) gets through a flood of idle
  connections; none is evicted in its first :data:`EVICT_AFTER` seconds (while all are
  that young, newcomers wait in the kernel's queue), so a probe stalled for a moment
  between its connect and its request is not shut out either;
* /healthz, /readyz and every error are answered by the selector thread itself (a few bytes
  from memory); /metrics and /status go to a pool of :data:`WORKERS` threads, at most
  :data:`MAX_QUEUED` requests in it (more are answered 503 at once);
* one request per connection (``Connection: close``), as probes and scrapers expect; after
  an answer, what the client still sends is read and dropped for up to :data:`LINGER`
  seconds, so that the close does not reset the connection before the answer is read.

One module a concern: :mod:`~scheduler.ops.http.protocol` (request heads parsed with limits,
responses on the wire), :mod:`~scheduler.ops.http.routes` (what each endpoint answers, what
/status shows of a run), :mod:`~scheduler.ops.http.server` (the selector loop, the pool, the
caps).
"""

from __future__ import annotations

from scheduler.ops.http.protocol import (
    ALLOWED,
    MAX_HEAD,
    MAX_HEADERS,
    MAX_REQUEST_LINE,
    OTHER_METHODS,
    Refused,
    Request,
    Response,
    check_line_start,
    parse_head,
    parse_request_line,
)
from scheduler.ops.http.routes import (
    ENDPOINTS,
    POOLED,
    PROBES,
    StatusSource,
    error_summary,
    public_run,
    route,
)
from scheduler.ops.http.server import (
    BACKLOG,
    EVICT_AFTER,
    HEAD_TIMEOUT,
    LINGER,
    LINGER_CHUNK,
    MAX_CONNECTIONS,
    MAX_QUEUED,
    SHED_LOG_INTERVAL,
    WORKERS,
    WRITE_TIMEOUT,
    StatusServer,
)

__all__ = [
    "ALLOWED",
    "BACKLOG",
    "ENDPOINTS",
    "EVICT_AFTER",
    "HEAD_TIMEOUT",
    "LINGER",
    "LINGER_CHUNK",
    "MAX_CONNECTIONS",
    "MAX_HEAD",
    "MAX_HEADERS",
    "MAX_QUEUED",
    "MAX_REQUEST_LINE",
    "OTHER_METHODS",
    "POOLED",
    "PROBES",
    "SHED_LOG_INTERVAL",
    "WORKERS",
    "WRITE_TIMEOUT",
    "Refused",
    "Request",
    "Response",
    "StatusServer",
    "StatusSource",
    "check_line_start",
    "error_summary",
    "parse_head",
    "parse_request_line",
    "public_run",
    "route",
]
