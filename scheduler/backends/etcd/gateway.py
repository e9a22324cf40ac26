"""A thin, bounded client of etcd's v3 HTTP/JSON gateway (``/v3/...``), on ``httpx``.

**Why not a published client.** The maintained gRPC client ``etcd3`` fails to import with
protobuf >= 4, ``aetcd`` is asyncio-only, and OpenStack's ``etcd3gw`` (synchronous, on the
same gateway) was evaluated first and falls short of the contract in three ways:

* one endpoint only: no failover to another member when the one it talks to is down or
  cut off from the quorum;
* no authentication at all (no ``/v3/auth/authenticate``, no ``Authorization`` header), so
  no etcd user, no least-privilege role;
* its watch runs a thread per watcher reading a ``requests`` stream that cannot be cut
  short, so a follower's wait cannot be bounded or stopped by ``close()``.

Its transactions are raw dicts, so they would have been expressive enough; the rest is not.
This module is what Baton needs of the gateway and nothing more: ``kv/range``, ``kv/txn``
(nested transactions, etcd >= 3.3), ``lease/grant|keepalive|revoke|timetolive``, a
``watch`` stream, and ``auth/authenticate``.

**Bounds.** Every call has one deadline, ``op_timeout`` from when it starts: each try of an
endpoint gets the time left (httpx's connect, write, read and pool timeouts all set to it).
Only a connection that could not be opened moves on to the next endpoint within a call (the
request never left, so nothing can have happened twice); a call that timed out or met a
member without a leader raises :class:`~scheduler.errors.BackendUnavailable` and the next
call starts at the next endpoint. Nothing is retried otherwise, except a request refused for
an expired auth token, which is sent once more after authenticating again (etcd refused it
before doing anything).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import httpx

from scheduler.backends.etcd.url import EtcdTarget
from scheduler.errors import (
    BackendAuthError,
    BackendError,
    BackendPermanentError,
    BackendUnavailable,
    excerpt,
)

#: Connections kept open per endpoint (calls from the elector, the runner's claims, presence
#: and operator reads run side by side; more wait for one, within their deadline).
POOL_SIZE = 8

# gRPC status codes the gateway puts in its error bodies.
_UNAUTHENTICATED = 16
_PERMISSION_DENIED = 7
_INVALID_ARGUMENT = 3
_FAILED_PRECONDITION = 9
_NOT_FOUND = 5
# Messages of errors that another try, later, can cure (etcd's rpctypes).
_TRANSIENT = (
    "no leader",
    "leader changed",
    "timed out",
    "too many requests",
    "not capable",
    "unhealthy cluster",
    "server stopped",
    "request cancelled",
    "raft proposal dropped",
)
_TOKEN_EXPIRED = ("invalid auth token", "invalid auth management")


def b64(text: str | bytes) -> str:
    """``text`` (UTF-8) base64-encoded, as the gateway takes keys and values."""
    raw = text.encode() if isinstance(text, str) else text
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> str:
    """A base64 key or value from the gateway, decoded to text."""
    return base64.b64decode(text).decode("utf-8", errors="replace")


def prefix_end(key: str) -> str:
    """The ``range_end`` that makes a range cover every key starting with ``key``."""
    raw = bytearray(key.encode())
    raw[-1] += 1  # keys here end in '/' or a printable character: never 0xff
    return b64(bytes(raw))


class EtcdGatewayError(BackendUnavailable):
    """An answer a caller of :class:`Gateway` may want to tell apart: an expired auth token
    (sent again once, after authenticating again) or a lease etcd no longer has. Transient
    where it is not handled."""


class Gateway:
    """The gateway client of one backend. Thread-safe.

    Args:
        target: the parsed URL (endpoints, TLS files, credentials).
        op_timeout: seconds any call may take.
    """

    def __init__(self, target: EtcdTarget, op_timeout: float) -> None:
        self.url = target.shown
        self.op_timeout = op_timeout
        self._target = target
        self._bases = target.base_urls()
        self._current = 0
        self._lock = threading.Lock()
        self._token: str | None = None
        verify: ssl.SSLContext | bool = False
        if target.tls:
            context = ssl.create_default_context(cafile=target.cacert)
            if target.cert and target.key:
                context.load_cert_chain(target.cert, target.key)
            verify = context
        limits = httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE)
        self._client = httpx.Client(verify=verify, limits=limits, trust_env=False)
        # Watches hold a connection for their whole wait: a client of their own.
        self._watch_client = httpx.Client(
            verify=verify, limits=httpx.Limits(max_connections=POOL_SIZE), trust_env=False
        )

    # -- calls --------------------------------------------------------------------------------

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body`` to ``/v3/<path>`` on the current endpoint; the answer's JSON.

        Raises:
            BackendUnavailable: no endpoint answered within ``op_timeout``, or etcd said a
                retry later can help (no leader, timed out).
            BackendAuthError: credentials refused, or permission denied.
            BackendPermanentError: a request etcd refuses for good (too many operations).
        """
        deadline = time.monotonic() + self.op_timeout
        try:
            return self._call(path, body, deadline)
        except EtcdGatewayError as exc:
            if any(word in str(exc) for word in _TOKEN_EXPIRED) and self._target.user:
                self._token = None
                return self._call(path, body, deadline)
            raise

    def _call(self, path: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        headers = self._headers(deadline) if path != "auth/authenticate" else {}
        response = self._post(path, body, headers, deadline)
        return self._answer(response)

    def _post(
        self, path: str, body: dict[str, Any], headers: dict[str, str], deadline: float
    ) -> httpx.Response:
        start = self._current
        last: Exception | None = None
        for step in range(len(self._bases)):
            index = (start + step) % len(self._bases)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                response = self._client.post(
                    f"{self._bases[index]}/v3/{path}",
                    json=body,
                    headers=headers,
                    timeout=httpx.Timeout(left),
                )
            except httpx.ConnectError as exc:
                # Nothing was sent: the next endpoint may take the call.
                last = exc
                self._current = (index + 1) % len(self._bases)
                continue
            except (httpx.TimeoutException, httpx.TransportError) as exc:
                self._current = (index + 1) % len(self._bases)
                raise BackendUnavailable(
                    self.url, f"no answer within op_timeout ({_describe(exc)})"
                ) from None
            if response.status_code >= 500 or _is_transient(response):
                # A member cut off from the quorum: the next call tries another.
                self._current = (index + 1) % len(self._bases)
            return response
        if isinstance(last, ssl.SSLError) or _is_tls(last):
            raise BackendPermanentError(self.url, f"TLS handshake failed: {_describe(last)}")
        detail = _describe(last) if last is not None else "no time left"
        raise BackendUnavailable(self.url, f"no endpoint answered: {detail}")

    def _answer(self, response: httpx.Response) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError:
            raise BackendUnavailable(
                self.url, f"HTTP {response.status_code} without a JSON body"
            ) from None
        if response.status_code == 200 and isinstance(data, dict) and "error" not in data:
            return data
        if not isinstance(data, dict):
            raise BackendUnavailable(self.url, f"HTTP {response.status_code}: unexpected answer")
        error = data.get("error")
        if isinstance(error, dict):  # a stream's error: {"error": {"grpc_code": .., ...}}
            message = str(error.get("message", ""))
            code = int(error.get("grpc_code", error.get("http_code", 0)) or 0)
        else:
            message = str(data.get("message") or error or "")
            code = int(data.get("code", 0) or 0)
        raise self._translate(code, message)

    def _translate(self, code: int, message: str) -> BackendError:
        shown = excerpt(message, 160).strip("'")
        if any(word in message for word in _TOKEN_EXPIRED):
            return EtcdGatewayError(self.url, shown)
        if "authentication failed" in message or "user name is empty" in message:
            return BackendAuthError(self.url, f"credentials refused: {shown}")
        if code == _UNAUTHENTICATED:
            return BackendAuthError(self.url, f"credentials refused: {shown}")
        if code == _PERMISSION_DENIED or "permission denied" in message:
            return BackendAuthError(
                self.url,
                f"permission denied: {shown} (README, etcd: the role needs readwrite on "
                f"the prefix {self._target.prefix}/)",
            )
        if any(word in message for word in _TRANSIENT):
            return BackendUnavailable(self.url, shown)
        if code in (_INVALID_ARGUMENT, _FAILED_PRECONDITION) and "lease" not in message:
            return BackendPermanentError(self.url, shown)
        if code == _NOT_FOUND or "lease not found" in message:
            return EtcdGatewayError(self.url, shown)
        return BackendUnavailable(self.url, shown)

    def _headers(self, deadline: float) -> dict[str, str]:
        if not self._target.user:
            return {}
        with self._lock:
            if self._token is None:
                response = self._post(
                    "auth/authenticate",
                    {"name": self._target.user, "password": self._target.password or ""},
                    {},
                    deadline,
                )
                self._token = str(self._answer(response).get("token", ""))
            return {"Authorization": self._token}

    # -- the calls Baton makes ----------------------------------------------------------------

    def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """One transaction: ``{"succeeded": bool, "responses": [...], "header": {...}}``."""
        body: dict[str, Any] = {"compare": compare, "success": success}
        if failure:
            body["failure"] = failure
        answer = self.call("kv/txn", body)
        answer.setdefault("succeeded", False)
        answer.setdefault("responses", [])
        return answer

    def range(self, key: str, *, prefix: bool = False, **options: Any) -> dict[str, Any]:
        """The keys at ``key`` (or under it, with ``prefix``): the gateway's range answer."""
        return self.call("kv/range", range_request(key, prefix=prefix, **options))

    def grant(self, ttl: int) -> int:
        """A new etcd lease of ``ttl`` seconds (etcd may raise it to its minimum); its id."""
        answer = self.call("lease/grant", {"TTL": str(ttl)})
        return int(answer["ID"])

    def keepalive(self, lease_id: int) -> int:
        """Refresh ``lease_id``; its TTL in seconds, 0 if the lease no longer exists."""
        answer = self.call("lease/keepalive", {"ID": str(lease_id)})
        result = answer.get("result", answer)
        return int(result.get("TTL", 0) or 0)

    def time_to_live(self, lease_id: int) -> int:
        """Seconds left of ``lease_id``; 0 (or less) if it no longer exists."""
        answer = self.call("lease/timetolive", {"ID": str(lease_id)})
        return int(answer.get("TTL", 0) or 0)

    def revoke(self, lease_id: int) -> None:
        """Revoke ``lease_id`` (its keys are deleted); a lease already gone is no error."""
        with suppress(EtcdGatewayError):
            self.call("lease/revoke", {"ID": str(lease_id)})

    @contextmanager
    def watch(self, body: dict[str, Any], read_timeout: float) -> Iterator[Iterator[Any]]:
        """A watch stream: yields each message's ``result`` (events, created, canceled).

        Raises (from iteration) ``httpx.ReadTimeout`` after ``read_timeout`` seconds
        without a message, any transport error, and the :class:`BackendError` a stream
        ended with (an expired auth token is dropped first, so the next watch renews it).
        A stream that failed before its first message moves the client on to the next
        endpoint.
        """
        deadline = time.monotonic() + self.op_timeout
        headers = self._headers(deadline)
        index = self._current
        timeout = httpx.Timeout(self.op_timeout, read=max(0.001, read_timeout))
        heard = False
        try:
            with self._watch_client.stream(
                "POST",
                f"{self._bases[index]}/v3/watch",
                json=body,
                headers=headers,
                timeout=timeout,
            ) as response:

                def results() -> Iterator[Any]:
                    nonlocal heard
                    for line in response.iter_lines():
                        heard = True
                        if not line.strip():
                            continue
                        message = json.loads(line)
                        error = message.get("error")
                        if error is not None:
                            raise self._stream_error(error)
                        yield message.get("result", {})

                yield results()
        except (httpx.TimeoutException, httpx.TransportError):
            if not heard:
                # Not even the "created" answer: a member that is down, stopped or cut off
                # from the quorum. The next watch (and call) tries the next one.
                self._current = (index + 1) % len(self._bases)
            raise

    def _stream_error(self, error: Any) -> BackendError:
        """The error a watch stream ended with (an expired token is dropped, to be renewed)."""
        if not isinstance(error, dict):
            return BackendUnavailable(self.url, f"watch failed: {excerpt(str(error), 120)}")
        message = str(error.get("message", ""))
        if any(word in message for word in _TOKEN_EXPIRED):
            self._token = None
        return self._translate(int(error.get("grpc_code", 0) or 0), message)

    def close(self) -> None:
        """Close every connection."""
        self._client.close()
        self._watch_client.close()


def range_request(key: str, *, prefix: bool = False, **options: Any) -> dict[str, Any]:
    """A ``RangeRequest`` body for ``key`` (or every key under it, with ``prefix``)."""
    body: dict[str, Any] = {"key": b64(key)}
    if prefix:
        body["range_end"] = prefix_end(key)
    body.update(options)
    return body


# -- transaction parts (keys and values as text; encoded here) ----------------------------------


def create_is(key: str, revision: int) -> dict[str, Any]:
    """Compare: ``key``'s create revision is ``revision`` (0: the key does not exist)."""
    return {
        "key": b64(key),
        "target": "CREATE",
        "result": "EQUAL",
        "create_revision": str(revision),
    }


def mod_is(key: str, revision: int | str) -> dict[str, Any]:
    """Compare: ``key``'s mod revision is ``revision`` (unchanged since it was read)."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


def value_is(key: str, value: str) -> dict[str, Any]:
    """Compare: ``key``'s value is ``value``."""
    return {"key": b64(key), "target": "VALUE", "result": "EQUAL", "value": b64(value)}


def put(key: str, value: str, lease: int = 0) -> dict[str, Any]:
    """Operation: put ``value`` at ``key`` (attached to etcd lease ``lease`` unless 0)."""
    request: dict[str, Any] = {"key": b64(key), "value": b64(value)}
    if lease:
        request["lease"] = str(lease)
    return {"request_put": request}


def delete(key: str) -> dict[str, Any]:
    """Operation: delete ``key``."""
    return {"request_delete_range": {"key": b64(key)}}


def get(key: str, *, prefix: bool = False, **options: Any) -> dict[str, Any]:
    """Operation: read ``key`` (or every key under it, with ``prefix``)."""
    return {"request_range": range_request(key, prefix=prefix, **options)}


def nested(
    compare: list[dict[str, Any]],
    success: list[dict[str, Any]],
    failure: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Operation: a transaction inside a transaction (etcd >= 3.3)."""
    txn: dict[str, Any] = {"compare": compare, "success": success}
    if failure:
        txn["failure"] = failure
    return {"request_txn": txn}


def _is_transient(response: httpx.Response) -> bool:
    return response.status_code != 200 and any(word in response.text for word in _TRANSIENT)


def _is_tls(exc: Exception | None) -> bool:
    text = str(exc) if exc is not None else ""
    return "CERTIFICATE" in text.upper() or "SSL" in text.upper()


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "no time left"
    text = str(exc).strip().splitlines()
    return excerpt(text[0] if text else type(exc).__name__, 120).strip("'")


__all__ = [
    "Gateway",
    "b64",
    "create_is",
    "delete",
    "get",
    "mod_is",
    "nested",
    "prefix_end",
    "put",
    "range_request",
    "unb64",
    "value_is",
]
