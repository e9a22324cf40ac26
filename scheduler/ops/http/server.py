"""The HTTP server: one selector thread for connections and probes, a small pool for the rest.

Every resource is capped (see :mod:`scheduler.ops.http` for the whole picture): connections
being read (:data:`MAX_CONNECTIONS`, the oldest evicted), the time to deliver a request head
(:data:`HEAD_TIMEOUT`), requests queued for the workers (:data:`MAX_QUEUED`, more are 503).
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from scheduler.ops.http.protocol import (
    MAX_HEAD,
    Refused,
    Request,
    Response,
    check_line_start,
    parse_head,
    parse_request_line,
)
from scheduler.ops.http.routes import POOLED, StatusSource, route
from scheduler.ops.logs import get_logger

#: Seconds from accepting a connection to the end of its request head (idle or trickling).
HEAD_TIMEOUT = 5.0
#: Connections whose request head is being read; a new one evicts the oldest.
MAX_CONNECTIONS = 64
#: Seconds a connection is safe from eviction after its accept: the time a client has to
#: send its request while a flood of idle connections arrives. Longer protects a probe
#: whose machine stalls it between its connect and its request; while every connection
#: being read is this young, accepting pauses (the kernel queues newcomers, up to
#: :data:`BACKLOG`), so a flood is accepted at MAX_CONNECTIONS / EVICT_AFTER per second
#: (3,200) and a probe behind it in the queue waits up to BACKLOG / that rate (0.32 s).
#: Seen without it: a flood from another process evicted a probe between its connect and
#: its request once in two runs.
EVICT_AFTER = 0.02
#: Threads that serve /metrics and /status.
WORKERS = 2
#: /metrics and /status requests queued or being served; more are answered 503.
MAX_QUEUED = 8
#: Seconds a worker waits for a slow reader to take a response.
WRITE_TIMEOUT = 5.0
#: Pending connections the kernel holds before this process accepts them (capped by
#: net.core.somaxconn): room for a burst, so that a probe's SYN is not dropped and retried.
BACKLOG = 1024
#: Seconds an answered connection is still read (and its input dropped) before it is closed.
LINGER = 2.0
LINGER_CHUNK = 65536
#: Seconds between log lines summing up connections shed (evicted, timed out, refused).
SHED_LOG_INTERVAL = 60.0


@dataclass(eq=False)
class _Connection:
    """A connection being read: its request head, or (``lingering``) what the client still
    sends after its answer, dropped."""

    sock: socket.socket
    deadline: float
    evictable: float = 0.0  # monotonic time from which a new connection may evict it
    data: bytearray = field(default_factory=bytearray)
    line_checked: bool = False
    lingering: bool = False


class _Queue:
    """Connections in arrival order, each due by a deadline that grows with that order."""

    def __init__(self) -> None:
        self._items: OrderedDict[int, _Connection] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[_Connection]:
        return iter(list(self._items.values()))

    def add(self, conn: _Connection) -> None:
        self._items[id(conn)] = conn

    def discard(self, conn: _Connection) -> None:
        self._items.pop(id(conn), None)

    def oldest(self) -> _Connection | None:
        return next(iter(self._items.values()), None)

    def __contains__(self, conn: _Connection) -> bool:
        return id(conn) in self._items


def _head_end(data: bytearray) -> tuple[int, int] | None:
    """Where the head in ``data`` ends and the body begins, or ``None`` if not yet."""
    ends = [(i, i + len(sep)) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    return min(ends) if ends else None


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


class StatusServer:
    """Serves the endpoints of ``source`` on ``host:port`` (see the module docstring).

    Raises:
        OSError: cannot listen on ``host:port`` (from the constructor).
    """

    def __init__(self, source: StatusSource, host: str, port: int) -> None:
        self.source = source
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self._listener.setblocking(False)
        self._log = get_logger(replica=source.replica_id)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._reading = _Queue()  # heads being read, due HEAD_TIMEOUT after the accept
        self._lingering = _Queue()  # answered, dropping late input, due LINGER after that
        self._accept_paused_until: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="baton-http")
        self._queued = 0
        self._queued_lock = threading.Lock()
        self._shed = {"evicted": 0, "timed_out": 0, "refused": 0}
        self._shed_logged = time.monotonic()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="baton-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close every connection (requests being served are dropped)."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for conn in [*self._reading, *self._lingering]:
            _close(conn.sock)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            self._selector.close()
        for sock in (self._listener, self._wake_r, self._wake_w):
            _close(sock)

    # -- the selector thread ----------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping:
            try:
                self._turn()
            except Exception:  # a bug must not end the probes: log it, keep serving
                self._log.exception("http_loop_failed")
                time.sleep(0.05)

    def _turn(self) -> None:
        deadlines = [c.deadline for c in (self._reading.oldest(), self._lingering.oldest()) if c]
        if self._accept_paused_until is not None:
            deadlines.append(self._accept_paused_until)
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        accept = False
        for key, _ in self._selector.select(timeout):
            if key.data == "accept":
                accept = True
            elif key.data == "wake":
                with contextlib.suppress(OSError):
                    self._wake_r.recv(64)
            else:
                self._read(key.data)
        # Heads already arrived are answered before new connections can evict them.
        if accept:
            self._accept()
        now = time.monotonic()
        self._expire(now)
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ, "accept")
        self._log_shed(now)

    def _accept(self) -> None:
        # At most the cap per batch, so that the rest of a batch cannot evict a connection
        # accepted early in it before its request is read.
        for _ in range(MAX_CONNECTIONS):
            oldest = self._reading.oldest()
            if len(self._reading) >= MAX_CONNECTIONS and oldest is not None:
                now = time.monotonic()
                if oldest.evictable > now:  # too young to evict: let the kernel queue
                    self._pause_accept(oldest.evictable)
                    return
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    continue  # the client gave up before we accepted (ECONNABORTED, ...)
                oldest = self._lingering.oldest() or self._reading.oldest()
                if oldest is not None:
                    self._drop(oldest)  # frees a file descriptor for the next accept
                    self._shed["evicted"] += 1
                    continue
                # Out of descriptors and nothing of ours to free: pause, do not spin.
                self._pause_accept(time.monotonic() + 0.1)
                return
            now = time.monotonic()
            conn = _Connection(sock, now + HEAD_TIMEOUT, now + EVICT_AFTER)
            self._watch(conn)
            self._read(conn)  # a probe's request is usually there already: answer it now

    def _pause_accept(self, until: float) -> None:
        self._selector.unregister(self._listener)
        self._accept_paused_until = until

    def _watch(self, conn: _Connection) -> None:
        """Read ``conn`` from now on; at the cap, the oldest connection of its kind goes."""
        queue = self._lingering if conn.lingering else self._reading
        oldest = queue.oldest()
        if len(queue) >= MAX_CONNECTIONS and oldest is not None:
            if not oldest.lingering:
                # Its request may have arrived since it was accepted (a probe sends it right
                # after connecting, and a flood of idle connections can fill a whole accept
                # batch in between): answer that rather than evict it. Seen under load: one
                # /healthz in a flood of 3,000 idle connections went unanswered.
                self._read(oldest)
            if oldest in queue:
                self._drop(oldest)
                if not oldest.lingering:
                    self._shed["evicted"] += 1
        conn.sock.setblocking(False)
        queue.add(conn)
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _forget(self, conn: _Connection) -> None:
        """Stop reading ``conn`` (its socket stays open)."""
        (self._lingering if conn.lingering else self._reading).discard(conn)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)

    def _drop(self, conn: _Connection) -> None:
        self._forget(conn)
        _close(conn.sock)

    def _expire(self, now: float) -> None:
        while (conn := self._lingering.oldest()) is not None and conn.deadline <= now:
            self._drop(conn)
        while (conn := self._reading.oldest()) is not None and conn.deadline <= now:
            self._forget(conn)
            self._shed["timed_out"] += 1
            if conn.data:  # it did start a request: say why it ends
                self._answer(conn.sock, Response.text(408, "request head not received in time"))
            else:
                _close(conn.sock)

    def _read(self, conn: _Connection) -> None:
        size = LINGER_CHUNK if conn.lingering else MAX_HEAD + 1 - len(conn.data)
        try:
            chunk = conn.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:  # closed by the client (a TCP probe does just that)
            self._drop(conn)
            return
        if conn.lingering:
            return  # late input of an answered request: dropped
        conn.data += chunk
        end = _head_end(conn.data)
        if end is None:
            self._incomplete(conn)
            return
        self._forget(conn)
        head, head_only = bytes(conn.data[: end[0]]), False
        try:
            request = parse_head(head)
            head_only = request.method == "HEAD"
            if request.path in POOLED:
                self._hand_over(conn.sock, request)
                return
            response = route(self.source, request)
        except Refused as exc:
            response = exc.response
        except Exception:
            self._log.exception("http_request_failed")
            response = Response.text(500, "internal error (see the replica's log)")
        self._answer(conn.sock, response, head_only)

    def _incomplete(self, conn: _Connection) -> None:
        """Refuse a head that cannot become valid (a bad request line, too big) at once."""
        data = conn.data
        newline = data.find(b"\n")
        try:
            if not conn.line_checked:
                if newline >= 0:
                    conn.line_checked = True
                    parse_request_line(bytes(data[:newline]).removesuffix(b"\r"))
                else:
                    check_line_start(data)
            if len(data) > MAX_HEAD:
                raise Refused(431, f"request head larger than {MAX_HEAD} bytes")
        except Refused as exc:
            self._forget(conn)
            self._answer(conn.sock, exc.response)

    def _answer(self, sock: socket.socket, response: Response, head_only: bool = False) -> None:
        """Send a small response without blocking the selector thread, then end the
        connection: what the client still sends is read and dropped for up to LINGER
        seconds, since closing with unread input resets the connection, which can destroy
        the response before the client has read it."""
        data = response.encode(head_only)
        try:
            if sock.send(data) != len(data):  # a fresh socket's buffer takes far more
                raise BlockingIOError
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            _close(sock)
            return
        self._watch(_Connection(sock, time.monotonic() + LINGER, lingering=True))

    def _hand_over(self, sock: socket.socket, request: Request) -> None:
        with self._queued_lock:
            full = self._queued >= MAX_QUEUED
            if not full:
                self._queued += 1
        if full:
            self._shed["refused"] += 1
            busy = Response.text(503, "busy: try again shortly", ("Retry-After", "1"))
            self._answer(sock, busy, request.method == "HEAD")
            return
        try:
            self._pool.submit(self._serve_pooled, sock, request)
        except RuntimeError:  # shutting down
            self._done_pooled()
            _close(sock)

    def _log_shed(self, now: float) -> None:
        if now - self._shed_logged < SHED_LOG_INTERVAL or not any(self._shed.values()):
            return
        self._log.warning(
            "http_connections_shed", **self._shed, seconds=round(now - self._shed_logged)
        )
        self._shed = dict.fromkeys(self._shed, 0)
        self._shed_logged = now

    # -- workers ------------------------------------------------------------------------------

    def _serve_pooled(self, sock: socket.socket, request: Request) -> None:
        try:
            try:
                response = route(self.source, request)
            except Exception:
                self._log.exception("http_request_failed", path=request.path)
                response = Response.text(500, "internal error (see the replica's log)")
            sock.settimeout(WRITE_TIMEOUT)
            sock.sendall(response.encode(request.method == "HEAD"))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client went away or would not read: nothing more to do
        finally:
            _close(sock)
            self._done_pooled()

    def _done_pooled(self) -> None:
        with self._queued_lock:
            self._queued -= 1
