"""The kazoo session under every recipe: connection states, call deadlines, notices.

The states and the bounds of a call are described in the package docstring
(:mod:`scheduler.backends.zookeeper`, "Connection states" and "Bounded calls"). Recipes
follow the states through :meth:`Session.add_listener`: listeners run on kazoo's connection
thread with :attr:`Session.lock` held, so a state change and every recipe's reaction to it
are one step (as when they were one class). They must not block: a request they need is
posted through :meth:`Session.notify`, which runs it on the session's notice thread, never
on kazoo's threads. The states are :class:`~scheduler.backends.states.ConnectionState`:
kazoo's ``CONNECTED`` reaches the listeners as ``RECONNECTED`` when the session is the one
held before, and as ``LOST`` then ``CONNECTED`` when it is a new one seen without a
``LOST`` first (the old one expired while we were away).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import structlog
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    AuthFailedError,
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    OperationTimeoutError,
    RequestTimeoutError,
    SessionExpiredError,
    SessionMovedError,
    ThrottledOpError,
)
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.retry import KazooRetry
from kazoo.security import make_digest_acl

from scheduler.backends.states import ConnectionState
from scheduler.backends.zookeeper.settings import ZooKeeperSettings
from scheduler.backends.zookeeper.url import ZooKeeperTarget
from scheduler.errors import BackendAuthError, BackendError, BackendUnavailable

#: A recipe's reaction to a connection state.
Listener = Callable[[ConnectionState], None]

#: The most requests one call has in flight at once (:meth:`Session.gather`). ZooKeeper
#: answers a session's requests in the order they were sent, so a lease renewal sent
#: meanwhile waits behind those already sent: a wave of 1,000 reads is answered in a few
#: milliseconds, and the renewal goes between two waves.
WAVE = 1000
#: The wave of a history read (:meth:`~.batches.ZooKeeperBatches.history_many`): a
#: catch-up reads thousands of nodes, and must not depend on a thousand answers arriving
#: within one ``op_timeout`` on a loaded machine (a chaos run with 2,000 jobs and a 0.33 s
#: op_timeout failed its catch-up reads again and again); a claim batch keeps :data:`WAVE`.
READ_WAVE = 250

# Reconnect quickly after a server restart (kazoo's default backoff grows to an hour); the
# connection loop is kazoo's session layer, not a retried call.
_RECONNECT = {"max_tries": -1, "delay": 0.05, "backoff": 2, "max_delay": 1.0, "max_jitter": 0.2}
# Errors that mean "no answer now" rather than "never".
_UNAVAILABLE = (
    ConnectionLoss,
    OperationTimeoutError,
    RequestTimeoutError,
    SessionMovedError,
    ThrottledOpError,
)


@contextlib.contextmanager
def translated(url: str, what: str) -> Iterator[None]:
    """Translate kazoo's exceptions into Baton's, naming the backend ``url`` and ``what``."""
    try:
        yield
    except BackendError:
        raise
    except NoAuthError:
        raise BackendAuthError(
            url,
            f"{what}: permission denied by a ZooKeeper ACL: "
            "credentials missing or wrong (user:password in the URL)",
        ) from None
    except AuthFailedError:
        raise BackendAuthError(url, f"{what}: authentication failed") from None
    except ConnectionClosedError:
        raise BackendUnavailable(url, f"{what}: backend closed") from None
    except SessionExpiredError:
        raise BackendUnavailable(url, f"{what}: session expired") from None
    except _UNAVAILABLE as exc:
        raise BackendUnavailable(url, f"{what}: no answer ({type(exc).__name__})") from exc
    except KazooException as exc:
        raise BackendError(url, f"{what}: unexpected error {type(exc).__name__}") from exc


class Notices:
    """Callbacks run in order on one daemon thread: ``on_lost`` notices and the follow-up
    requests of a state change, never on kazoo's connection or callback threads."""

    def __init__(self, log: Any) -> None:
        self._log = log
        self._queue: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="baton-zk-notices", daemon=True).start()

    def put(self, notice: Callable[[], None]) -> None:
        """Run ``notice`` after those already queued. Never blocks, takes no lock."""
        self._queue.put(notice)

    def close(self) -> None:
        """End the thread after the notices already queued."""
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            notice = self._queue.get()
            if notice is None:
                return
            try:
                notice()
            except Exception:  # a failing listener must not stop later notices
                self._log.exception("zookeeper_notice_failed")


class ConnectProbe:
    """The session timeout the server grants at each connect, and the last connect error.

    kazoo keeps the negotiated value to itself: its connection handler's ``_connect``
    returns the read timeout it derives as two thirds of it. Wrapping that private method
    is the least intrusive way to see it; without it (a future kazoo) leases are simply
    not capped, and the configured timeout must be within the server's bounds. The
    wrapper also keeps the last connect error (a refused certificate, a refused
    connection) for the message of a call that found no session.
    """

    def __init__(self, client: KazooClient) -> None:
        #: Seconds of session timeout the server granted at the last connect, if known.
        self.negotiated: float | None = None
        #: Why the last connect failed; empty after a success.
        self.error = ""
        connection = getattr(client, "_connection", None)
        connect = getattr(connection, "_connect", None)
        if connection is None or not callable(connect):
            return

        def capturing(*args: Any, **kwargs: Any) -> Any:
            try:
                result = connect(*args, **kwargs)
            except Exception as exc:
                self.error = str(exc) or type(exc).__name__
                raise
            self.error = ""
            with contextlib.suppress(TypeError, ValueError, IndexError):
                self.negotiated = round(float(result[0]) * 1.5) / 1000.0
            return result

        connection._connect = capturing


class Session:
    """One kazoo session with bounded calls, shared by the recipes of one backend.

    No connection is made until the first :meth:`begin`. Safe to share between threads.

    Args:
        target: the parsed URL (ensemble, credentials).
        settings: session and TLS settings, checked.
        op_timeout: seconds each call may wait for the session and for its answers.
    """

    def __init__(
        self, target: ZooKeeperTarget, settings: ZooKeeperSettings, op_timeout: float
    ) -> None:
        self.url = target.shown
        self.settings = settings
        self.op_timeout = op_timeout
        # structlog directly: a backend does not import the ops layer (its logging set-up).
        self.log = structlog.get_logger("baton").bind(backend=self.url)
        #: The digest ACL every node Baton creates carries, or ``None`` without credentials.
        self.acl: list[Any] | None = None
        auth_data: list[tuple[str, str]] = []
        if target.user is not None and target.password is not None:
            self.acl = [make_digest_acl(target.user, target.password, all=True)]
            auth_data = [("digest", f"{target.user}:{target.password}")]
        self.client = KazooClient(
            hosts=target.hosts,
            timeout=settings.session_seconds,
            auth_data=auth_data,
            default_acl=self.acl,
            connection_retry=KazooRetry(**_RECONNECT),
            command_retry={"max_tries": 0},
            use_ssl=settings.use_tls,
            ca=settings.ca_file,
            certfile=settings.cert_file,
            keyfile=settings.key_file,
            verify_certs=True,
            check_hostname=settings.use_tls,
        )
        #: Guards the session's state and every recipe's; listeners run with it held.
        self.lock = threading.Condition(threading.Lock())
        self._notices = Notices(self.log)
        self._probe = ConnectProbe(self.client)
        self._started = False
        self._closed = False
        self._connected = False
        self._ever_connected = False
        self._session_id: int | None = None
        self._known: set[str] = set()  # directories known to exist
        self._state_waiters: list[threading.Event] = []
        self._listeners: list[Listener] = []
        self.client.add_listener(self._on_state)

    # --- state, read with the lock held for a consistent view ---------------------------

    @property
    def started(self) -> bool:
        """Whether a connection was ever asked for."""
        return self._started

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def connected(self) -> bool:
        """Whether requests are answered now (``CONNECTED``)."""
        return self._connected

    @property
    def held_id(self) -> int | None:
        """The session id we hold, connected or suspended; ``None`` before the first
        connect and after a loss."""
        return self._session_id

    @property
    def connected_id(self) -> int | None:
        """The current session id while connected, else ``None`` (for logs and tooling)."""
        with self.lock:
            return self._session_id if self._connected else None

    @property
    def negotiated_timeout(self) -> float | None:
        """Seconds of session timeout the server granted at the last connect, if known."""
        return self._probe.negotiated

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(state)`` at each state change, on kazoo's connection thread with
        :attr:`lock` held; it must not block."""
        self._listeners.append(listener)

    def notify(self, notice: Callable[[], None]) -> None:
        """Run ``notice`` on the notice thread; dropped once closed. Takes no lock."""
        if not self._closed:
            self._notices.put(notice)

    @contextlib.contextmanager
    def waking(self, event: threading.Event) -> Iterator[None]:
        """Set ``event`` at any state change (or close) while inside the block."""
        with self.lock:
            self._state_waiters.append(event)
        try:
            yield
        finally:
            with self.lock:
                if event in self._state_waiters:
                    self._state_waiters.remove(event)

    # --- calls ---------------------------------------------------------------------------

    def errors(self, what: str) -> contextlib.AbstractContextManager[None]:
        """Translate kazoo's exceptions inside the block (see :func:`translated`)."""
        return translated(self.url, what)

    def begin(self, limit: float | None = None) -> float:
        """Wait for a live session; return this call's deadline for its requests.

        Args:
            limit: a monotonic instant the deadline must not pass (for bounded waits).

        Raises:
            BackendUnavailable: closed, or no session before the deadline.
        """
        now = time.monotonic()
        with self.lock:
            if self._closed:
                raise BackendUnavailable(self.url, "backend closed")
            wait = self.op_timeout
            if self._session_id is None:
                # A new session must be established: the session and the answers share one
                # deadline, so an unreachable ensemble costs connect_wait, not more.
                wait = max(wait, self.settings.connect_wait)
            deadline = now + wait if limit is None else min(now + wait, limit)
            if not self._started:
                self._started = True
                self.client.start_async()
            while not self._connected:
                remaining = deadline - time.monotonic()
                if self._closed:
                    raise BackendUnavailable(self.url, "backend closed")
                if remaining <= 0:
                    error = self._probe.error
                    cause = f" (last error: {error})" if error else ""
                    raise BackendUnavailable(
                        self.url, f"no ZooKeeper session within {wait:g} s{cause}"
                    )
                self.lock.wait(remaining)
        return deadline

    def wait(self, result: Any, deadline: float, what: str) -> Any:
        """The answer of the async request ``result`` (``what``, for the message).

        Raises:
            BackendUnavailable: no answer before ``deadline``.
        """
        try:
            return result.get(timeout=max(0.0, deadline - time.monotonic()))
        except KazooTimeoutError:
            raise BackendUnavailable(
                self.url, f"no answer to {what} within op_timeout ({self.op_timeout:g} s)"
            ) from None

    def children(self, path: str, deadline: float) -> list[str]:
        """The child names of ``path``; none when it does not exist."""
        try:
            children = self.wait(self.client.get_children_async(path), deadline, "getChildren")
        except NoNodeError:
            return []
        return [str(c) for c in children]

    def ensure(self, path: str, deadline: float) -> None:
        """Create ``path`` and its missing parents, with our ACL; cached once known."""
        if path in self._known:
            return
        current = ""
        for segment in path.strip("/").split("/"):
            current = f"{current}/{segment}"
            if current in self._known:
                continue
            with contextlib.suppress(NodeExistsError):
                self.wait(self.client.create_async(current, b"", acl=self.acl), deadline, "create")
            self._known.add(current)

    def gather(
        self,
        requests: Sequence[Callable[[], Any]],
        what: str,
        answers_too: tuple[type[Exception], ...] = (NoNodeError,),
        wave: int = WAVE,
    ) -> list[Any]:
        """Send ``requests`` (each sends one async request and returns its result), at most
        :data:`WAVE` in flight at once, each wave with a deadline of its own.

        Args:
            requests: the requests, in order.
            what: what they are, for the message of a timeout.
            answers_too: errors that are answers (returned, not raised).
            wave: the most requests in flight at once (:data:`WAVE`, :data:`READ_WAVE`).

        Returns:
            Their answers, in order.

        Raises:
            BackendUnavailable: no session, or a wave not answered in time.
            KazooException: any other error of a request (translate it with :meth:`errors`).
        """
        answers: list[Any] = []
        for start in range(0, len(requests), wave):
            deadline = self.begin()
            pending = [request() for request in requests[start : start + wave]]
            for result in pending:
                try:
                    answers.append(self.wait(result, deadline, what))
                except answers_too as answer:
                    answers.append(answer)
        return answers

    def ensure_all(self, paths: Sequence[str]) -> None:
        """Create each of ``paths`` not known to exist, with our ACL (their parents first,
        as :meth:`ensure` does), the creates sent together (:meth:`gather`)."""
        missing = [path for path in dict.fromkeys(paths) if path not in self._known]
        if not missing:
            return
        deadline = self.begin()
        for parent in dict.fromkeys(path.rsplit("/", 1)[0] for path in missing):
            self.ensure(parent, deadline)
        self.gather(
            [partial(self.client.create_async, path, b"", acl=self.acl) for path in missing],
            "create",
            answers_too=(NodeExistsError,),
        )
        self._known.update(missing)

    def forget(self, path: str) -> None:
        """Drop ``path`` from the known directories (it was deleted behind our cache)."""
        self._known.discard(path)

    def close(self) -> None:
        """End the session (its ephemeral nodes go at once) and stop kazoo's threads."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.lock.notify_all()
            waiters = list(self._state_waiters)
        for event in waiters:
            event.set()
        with contextlib.suppress(KazooException, OSError):
            self.client.stop()
        with contextlib.suppress(KazooException, OSError):
            self.client.close()
        self._notices.close()

    # --- kazoo's connection thread (never blocks) ----------------------------------------

    def _on_state(self, state: str) -> None:
        """Follow the connection state and tell the listeners; the lock is held throughout."""
        with self.lock:
            if self._closed:
                self._connected = False
                self.lock.notify_all()
                return
            if state == KazooState.CONNECTED:
                session = self.client.client_id
                sid = int(session[0]) if session else None
                if self._session_id is not None and sid != self._session_id:
                    self._lose_session()  # expired while we were away
                resumed = self._session_id is not None
                self._session_id = sid
                self._connected = True
                self._tell(ConnectionState.RECONNECTED if resumed else ConnectionState.CONNECTED)
                if self._ever_connected:  # the first connect is the normal case: no line
                    self.log.info(
                        "zookeeper_reconnected",
                        session=f"{sid:#x}" if sid is not None else None,
                        resumed=resumed,
                    )
                self._ever_connected = True
            elif state == KazooState.SUSPENDED:
                self._connected = False
                self._tell(ConnectionState.SUSPENDED)
                self.log.warning("zookeeper_suspended", policy=self.settings.on_suspended)
            elif state == KazooState.LOST:
                self._connected = False
                self._lose_session()
                self.log.warning("zookeeper_session_lost")
            self.lock.notify_all()
            waiters = list(self._state_waiters)
        for event in waiters:
            event.set()

    def _lose_session(self) -> None:
        self._tell(ConnectionState.LOST)
        self._session_id = None

    def _tell(self, state: ConnectionState) -> None:
        for listener in self._listeners:
            listener(state)


__all__ = ["ConnectProbe", "Listener", "Notices", "Session", "translated"]
