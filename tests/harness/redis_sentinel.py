"""Redis as Sentinel runs it: a primary, 2 replicas and 3 Sentinels, all on loopback ports.

:class:`SentinelGroup` starts the lot, answers "who is primary now" the way a client does (it
asks a Sentinel), and makes the faults of issue 15: a Sentinel-driven failover, a kill -9 of
the primary, and a replica that misses writes (its replication link cut) so that promoting
it loses the last lease or token write.

How a replication link is cut. Every data server is reached through a *front*: a small TCP
proxy on its own port, and that front port is the server's address for everyone (the
Sentinels monitor it, clients get it from them, replicas replicate from it and announce
theirs with ``replica-announce-port``). The front recognises a replication link by the
``REPLCONF listening-port <port>`` a replica sends when it connects, so it knows which replica
the link belongs to, and :meth:`SentinelGroup.pause_replication` holds that link's bytes
(both ways, kept in order, delivered on :meth:`~SentinelGroup.resume_replication`, as TCP
would after a partition heals) while everything else (Sentinels, clients) passes. A plain
proxy in front of the replicas only would not do: a Sentinel sees a replica that reports a
primary address other than its own and repoints it (``+fix-slave-config``) after
``failover-timeout``. The replica whose link is held keeps ``master_link_status:up`` (its TCP
connection is alive; ``repl-timeout`` is 60 s), so a Sentinel still finds it fit to promote:
the dangerous, realistic case.

Timing. ``down-after-milliseconds`` 1000, ``failover-timeout`` 3000, and ``SENTINEL DEBUG``
shortens the periods Sentinel hard-codes (INFO every 1 s instead of 10 s, hello messages every
0.5 s instead of 2 s, PING and link reconnects every 0.2 s instead of 1 s, TILT for 5 s
instead of 30 s), so a failover takes a few seconds. A
production Sentinel notices a new replica, a priority change or a restarted old primary up
to ten times slower; failover times measured here are a lower bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode

import redis

from tests.harness.process_server import ProcessServer
from tests.harness.redis_server import (
    HOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    RedisServer,
    free_port,
    redis_server_binary,
)

#: The service name the Sentinels monitor (the ``/baton/`` of the URL).
SERVICE = "baton"
QUORUM = 2
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
#: ``SENTINEL DEBUG`` periods, in milliseconds (see the module docstring).
SENTINEL_DEBUG = {
    "info-period": 1000,
    "publish-period": 500,
    "tilt-period": 5000,
    # Also how soon a dropped link is reconnected. Every promotion and reconfiguration ends
    # with CLIENT KILL TYPE normal, which drops the Sentinels' own links: at the default
    # 1 s, reconnecting could outlast down-after and fail over a healthy new primary.
    "ping-period": 200,
}
#: Seconds to wait for the group to settle after a start, a failover or a restart. A
#: Sentinel starts no automatic failover within 2 x failover-timeout of the previous one, so
#: a kill -9 right after a failover waits for that too.
SETTLE_TIMEOUT = 30.0
#: Seconds one SENTINEL FAILOVER is given to settle before :meth:`SentinelGroup.failover`
#: asks again (a promotion here takes 1-4 s; an aborted one never settles).
FAILOVER_ATTEMPT = 12.0
#: A key the harness deletes (it never exists) to prove a new primary takes writes: a
#: replica refuses even that with READONLY, and nothing is left behind.
PROBE_KEY = "baton-harness:probe"


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` until true; Redis errors mean "not yet"; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            if condition():
                return
        except redis.RedisError as exc:
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last!r})" if last else ""
            raise TimeoutError(f"{what} not reached within {timeout} s{detail}")
        time.sleep(0.02)


def distinct_free_ports(count: int) -> list[int]:
    """``count`` free loopback ports, all different (``free_port`` alone may repeat one: it
    reserves nothing until the server binds it)."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def replication_info(server: RedisServer) -> dict[str, Any]:
    """``INFO replication`` of ``server``, through a short-lived direct client."""
    with server.client(timeout=1.0) as client:
        return dict(client.info("replication"))


# --- The fronts: one TCP proxy per data server, able to hold replication links ----------

#: The ``REPLCONF listening-port <port>`` a replica sends on connecting, in RESP.
_LISTENING_PORT = re.compile(rb"listening-port\r\n\$\d+\r\n(\d+)\r\n", re.IGNORECASE)
_SNIFF_BYTES = 4096
_CHUNK = 65536


class _LoopThread:
    """An asyncio loop in a daemon thread, shared by the fronts of one group."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.name = "redis-sentinel-fronts"
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class _Direction:
    """One direction of one connection: chunks queued in order, sent unless held."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.queue: list[bytes] = []
        self.source_closed = False
        self.wake = asyncio.Event()


class _Front:
    """Forwards ``127.0.0.1:port`` to a data server, holding the replication links of the
    replicas (named by their announced port) in ``cut``; runs on the group's loop."""

    def __init__(self, loop: _LoopThread, cut: set[int]) -> None:
        self._loop = loop
        self.upstream = 0  # set before the first connection: the server's port
        self._cut = cut
        self._directions: set[_Direction] = set()
        self._server: asyncio.Server = loop.run(
            asyncio.start_server(self._accept, HOST, 0, reuse_address=True)
        )
        self.port: int = self._server.sockets[0].getsockname()[1]

    def wake(self) -> None:
        """Re-check every held link (call on the loop after ``cut`` changed)."""
        for direction in self._directions:
            direction.wake.set()

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            for direction in list(self._directions):
                direction.writer.close()

        with contextlib.suppress(Exception):
            self._loop.run(shut())

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream)
        except OSError:
            writer.close()  # the server is down: the client sees its connection closed
            return
        replica: list[int] = []  # the announced port, once the link is known to be one

        def held() -> bool:
            return bool(replica) and replica[0] in self._cut

        to_server, to_client = _Direction(up_writer), _Direction(writer)
        self._directions |= {to_server, to_client}
        try:
            await asyncio.gather(
                self._read(reader, to_server, to_client, sniff=replica),
                self._read(up_reader, to_client, to_server, sniff=None),
                self._send(to_server, to_client, held),
                self._send(to_client, to_server, held),
            )
        finally:
            self._directions -= {to_server, to_client}

    async def _read(
        self,
        reader: asyncio.StreamReader,
        out: _Direction,
        back: _Direction,
        sniff: list[int] | None,
    ) -> None:
        seen = b""
        try:
            while data := await reader.read(_CHUNK):
                if sniff is not None and not sniff and len(seen) < _SNIFF_BYTES:
                    seen += data
                    if match := _LISTENING_PORT.search(seen):
                        sniff.append(int(match.group(1)))
                out.queue.append(data)
                out.wake.set()
        except (ConnectionError, OSError):
            pass
        finally:
            out.source_closed = True
            out.wake.set()
            back.wake.set()  # its destination is gone

    async def _send(self, out: _Direction, back: _Direction, held: Callable[[], bool]) -> None:
        """Drain ``out`` unless held; its destination is gone once ``back``'s source closed."""
        try:
            while True:
                if back.source_closed:
                    break  # the destination closed: nothing more can reach it
                if out.queue and not held():
                    chunks, out.queue = out.queue, []
                    out.writer.write(b"".join(chunks))
                    await out.writer.drain()
                    continue
                if out.source_closed and not out.queue:
                    break
                out.wake.clear()
                await out.wake.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            out.writer.close()


# --- Sentinel ----------------------------------------------------------------------------


class SentinelServer(ProcessServer):
    """One Redis Sentinel (``redis-server <conf> --sentinel``) monitoring ``service``.

    Its config file is written once and kept: Sentinel rewrites it with what it learns, so a
    restarted Sentinel remembers the current primary, as in production.

    Args:
        primary: the (host, port) the Sentinel is first told the primary is at.
        service: the monitored name.
        port: the port to bind; a free one when ``None``.
    """

    name = "redis-sentinel"
    start_timeout = START_TIMEOUT
    stop_timeout = STOP_TIMEOUT

    def __init__(
        self,
        primary: tuple[str, int],
        service: str = SERVICE,
        port: int | None = None,
        down_after_ms: int = DOWN_AFTER_MS,
    ) -> None:
        self._binary = redis_server_binary()
        super().__init__(port, dir_prefix="baton-sentinel-")
        self.primary_address = primary
        self.service = service
        self.down_after_ms = down_after_ms

    @property
    def address(self) -> tuple[str, int]:
        return (HOST, self.port)

    @property
    def log_path(self) -> Path:
        return self.dir / "sentinel.log"

    @property
    def config_path(self) -> Path:
        return self.dir / "sentinel.conf"

    def client(self, timeout: float = 2.0) -> redis.Redis:
        """A client of this Sentinel (``client.sentinel_master(SERVICE)`` and so on)."""
        return redis.Redis(
            host=HOST,
            port=self.port,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            decode_responses=True,
        )

    def _launch(self) -> subprocess.Popen[bytes]:
        if not self.config_path.exists():
            host, port = self.primary_address
            s = self.service
            self.config_path.write_text(
                f"port {self.port}\n"
                f"bind {HOST}\n"
                f"dir {self.dir}\n"
                f"logfile {self.log_path}\n"
                f"sentinel monitor {s} {host} {port} {QUORUM}\n"
                f"sentinel down-after-milliseconds {s} {self.down_after_ms}\n"
                f"sentinel failover-timeout {s} {FAILOVER_TIMEOUT_MS}\n"
                f"sentinel parallel-syncs {s} 2\n"
            )
        return subprocess.Popen(
            [self._binary, str(self.config_path), "--sentinel", "--daemonize", "no"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def _wait_until_ready(self) -> None:
        def ready() -> bool:
            with self.client(timeout=0.5) as client:
                args: list[object] = []
                for name, value in SENTINEL_DEBUG.items():
                    args += [name, value]
                client.execute_command("SENTINEL DEBUG", *args)
                return bool(client.sentinel_get_master_addr_by_name(self.service))

        self._wait_until(ready, "answer SENTINEL commands", (redis.RedisError,))


# --- The group ---------------------------------------------------------------------------


class SentinelGroup:
    """A primary, ``replicas`` replicas and ``sentinels`` Sentinels on loopback ports.

    Args:
        replicas: how many replicas the first primary starts with.
        sentinels: how many Sentinels (quorum 2).
        partitionable: reach every data server through a front (see the module docstring) so
            :meth:`pause_replication` works. ``False`` addresses the servers directly, for
            benchmarks that must not pay a Python proxy's latency on every call.
        config: extra ``redis.conf`` directives for every data server (persistence, say).
        down_after_ms: the Sentinels' ``down-after-milliseconds``: short for fault tests
            (a failover within seconds), long for a group that must never fail over by
            itself (the session's, under a loaded machine).
    """

    def __init__(
        self,
        replicas: int = 2,
        sentinels: int = 3,
        partitionable: bool = True,
        config: Mapping[str, str] | None = None,
        down_after_ms: int = DOWN_AFTER_MS,
    ) -> None:
        self.partitionable = partitionable
        self._loop = _LoopThread() if partitionable else None
        self._cut: set[int] = set()
        self._fronts: dict[int, _Front] = {}  # server port -> its front
        # The fronts bind first: a port picked for a server is only reserved once it binds.
        fronts = [_Front(self._loop, self._cut) for _ in range(1 + replicas)] if self._loop else []
        ports = distinct_free_ports(1 + replicas + sentinels)
        self.servers = [RedisServer(port=port, config={}) for port in ports[: 1 + replicas]]
        for server, front in zip(self.servers, fronts, strict=False):
            front.upstream = server.port
            self._fronts[server.port] = front
        first = self.address(self.servers[0])
        for server in self.servers:
            host, port = self.address(server)
            assert server.config is not None
            server.config.update(
                {
                    "replica-announce-ip": host,
                    "replica-announce-port": str(port),
                    # A full sync starts at once (Redis 7 waits 5 s for more replicas).
                    "repl-diskless-sync": "yes",
                    "repl-diskless-sync-delay": "0",
                    **(config or {}),
                }
            )
            if server is not self.servers[0]:
                server.config["replicaof"] = f"{first[0]} {first[1]}"
        self.sentinel_servers = [
            SentinelServer(first, port=p, down_after_ms=down_after_ms)
            for p in ports[1 + replicas :]
        ]

    # -- life cycle --

    def start(self) -> Self:
        """Start the servers, then the Sentinels; return once all of them agree.

        Every replica is connected (``master_link_status:up``) and every Sentinel knows the
        primary, every replica and every other Sentinel.
        """
        try:
            for server in self.servers:
                server.start()
            primary = self.servers[0]
            self._wait_replicating(primary, SETTLE_TIMEOUT)
            for sentinel in self.sentinel_servers:
                sentinel.start()
            wait_for(self._sentinels_know_all, SETTLE_TIMEOUT, "every Sentinel knows the group")
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        """Stop every process (by PID), close the fronts, remove the directories."""
        for process in [*self.sentinel_servers, *self.servers]:
            process.cleanup()
        for front in self._fronts.values():
            front.close()
        self._fronts.clear()
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    # -- addresses --

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        """The (host, port) of every Sentinel."""
        return [s.address for s in self.sentinel_servers]

    def url(self, db: int = 0, **options: object) -> str:
        """``redis+sentinel://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/baton/<db>[?options]``."""
        hosts = ",".join(f"{host}:{port}" for host, port in self.sentinels)
        query = f"?{urlencode(options)}" if options else ""
        return f"redis+sentinel://{hosts}/{SERVICE}/{db}{query}"

    def address(self, server: RedisServer) -> tuple[str, int]:
        """The (host, port) Sentinels and clients know ``server`` by (its front, if any)."""
        front = self._fronts.get(server.port)
        return (HOST, front.port if front else server.port)

    def server_at(self, address: tuple[str, int]) -> RedisServer:
        """The data server a Sentinel means by ``address``."""
        for server in self.servers:
            if self.address(server) == (address[0], int(address[1])):
                return server
        raise LookupError(f"no server of this group at {address}")

    # -- roles --

    def primary(self) -> RedisServer:
        """The current primary, as the first Sentinel that answers reports it."""
        last: Exception | None = None
        for sentinel in self.sentinel_servers:
            if not sentinel.running:
                continue
            try:
                with sentinel.client(timeout=1.0) as client:
                    return self.server_at(client.sentinel_get_master_addr_by_name(SERVICE))
            except redis.RedisError as exc:
                last = exc
        raise RuntimeError(f"no Sentinel answered get-master-addr-by-name: {last!r}")

    def replicas(self) -> list[RedisServer]:
        """The running data servers other than the current primary."""
        primary = self.primary()
        return [s for s in self.servers if s is not primary and s.running]

    # -- faults --

    def failover(self, timeout: float = SETTLE_TIMEOUT) -> RedisServer:
        """``SENTINEL FAILOVER baton`` and wait until it is done; returns the new primary.

        Done: every Sentinel reports a primary other than the old one, it takes a write, and
        every other running server replicates from it (the ones whose link is paused only
        need to point at it: their link cannot come up).
        """
        return self._fail_over_from(self.primary(), timeout)

    def kill_primary(self, timeout: float = SETTLE_TIMEOUT) -> RedisServer:
        """kill -9 the primary and wait until the Sentinels promoted another; returns the
        killed server. :meth:`rejoin` brings it back; Sentinel makes it a replica then."""
        old = self.primary()
        old.kill()
        self._wait_settled(old, timeout)
        return old

    def rejoin(self, server: RedisServer, timeout: float = SETTLE_TIMEOUT) -> None:
        """Start ``server`` again (after a kill) and wait until it replicates from the
        current primary. A restarted old primary first comes up as a primary of its own
        (empty: no persistence) until a Sentinel converts it (about 2 s here)."""
        if not server.running:
            server.start()
        primary = self.primary()
        wait_for(
            lambda: self._replicates_from(server, primary),
            timeout,
            f"{self.address(server)} replicating from {self.address(primary)}",
        )

    def promote(self, server: RedisServer, timeout: float = SETTLE_TIMEOUT) -> None:
        """Fail over to ``server`` in particular, even if it missed writes the others have.

        Sentinel promotes the best replica (priority, then replication offset), so every
        other replica is given ``replica-priority 0`` (never promoted) until the Sentinels
        have seen it, then ``SENTINEL FAILOVER``; the priorities are restored afterwards.
        """
        old = self.primary()
        if server is old:
            raise ValueError(f"{self.address(server)} is already the primary")
        others = [s for s in self.replicas() if s is not server]
        try:
            for other in others:
                self._set_priority(other, 0)
            self._set_priority(server, 100)
            wait_for(
                lambda: self._sentinels_see_priorities(server, others),
                timeout,
                "every Sentinel sees the new replica priorities",
            )
            new = self._fail_over_from(old, timeout)
        finally:
            for other in others:
                with contextlib.suppress(redis.RedisError):
                    self._set_priority(other, 100)
        if new is not server:
            raise RuntimeError(f"Sentinel promoted {self.address(new)}, not the one asked")

    def pause_replication(self, server: RedisServer | None = None) -> None:
        """Hold ``server``'s replication link (every replica's when ``None``): it receives
        no more writes from whichever primary it follows, yet looks connected."""
        self._change_cut(server, add=True)

    def resume_replication(self, server: RedisServer | None = None) -> None:
        """Release the held link(s) of ``server`` (every server when ``None``); what was
        held is delivered in order if the link still exists, dropped if it was closed."""
        self._change_cut(server, add=False)

    def heal(self, timeout: float = SETTLE_TIMEOUT) -> None:
        """Undo every fault: resume all links, restart killed servers, wait until all
        replicate from the current primary. For a shared fixture between tests."""
        if self.partitionable:
            self.resume_replication()
        for sentinel in self.sentinel_servers:
            if not sentinel.running:
                sentinel.start()
        for server in self.servers:
            if server is not self.primary():
                self.rejoin(server, timeout)

    @contextlib.contextmanager
    def replication_paused(self, server: RedisServer | None = None) -> Iterator[None]:
        """:meth:`pause_replication` for the ``with`` block."""
        self.pause_replication(server)
        try:
            yield
        finally:
            self.resume_replication(server)

    # -- internals --

    def _change_cut(self, server: RedisServer | None, add: bool) -> None:
        if self._loop is None:
            raise RuntimeError("pause_replication needs SentinelGroup(partitionable=True)")
        ports = {self.address(s)[1] for s in ([server] if server else self.servers)}
        loop = self._loop

        async def change() -> None:
            if add:
                self._cut |= ports
            else:
                self._cut -= ports
            for front in self._fronts.values():
                front.wake()

        loop.run(change())

    def _set_priority(self, server: RedisServer, priority: int) -> None:
        with server.client(timeout=1.0) as client:
            client.config_set("replica-priority", priority)

    def _sentinels_see_priorities(self, server: RedisServer, others: list[RedisServer]) -> bool:
        wanted = {self.address(s)[1]: 0 for s in others} | {self.address(server)[1]: 100}
        for sentinel in self.sentinel_servers:
            with sentinel.client(timeout=1.0) as client:
                seen = {r["port"]: r["slave-priority"] for r in client.sentinel_slaves(SERVICE)}
            if any(seen.get(port) != priority for port, priority in wanted.items()):
                return False
        return True

    def _fail_over_from(self, old: RedisServer, timeout: float) -> RedisServer:
        deadline = time.monotonic() + timeout
        ask = True
        while True:
            if ask:
                self._sentinel_failover(timeout)
            left = deadline - time.monotonic()
            try:
                return self._wait_settled(old, min(FAILOVER_ATTEMPT, max(left, 0.1)))
            except TimeoutError as exc:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{exc}\n{self.describe()}") from None
            # A failover a Sentinel accepted can still be aborted (its election lost, or the
            # promoted replica slow to answer within failover-timeout, on a loaded machine):
            # ask again rather than wait out the whole timeout. One that named a new primary
            # is only slow to settle: asking again would start a second one.
            ask = self._named_primaries() <= {self.address(old)}

    def _named_primaries(self) -> set[tuple[str, int]]:
        named = set()
        for sentinel in self.sentinel_servers:
            if sentinel.running:
                with contextlib.suppress(redis.RedisError), sentinel.client(timeout=1.0) as c:
                    if address := c.sentinel_get_master_addr_by_name(SERVICE):
                        named.add((address[0], int(address[1])))
        return named

    def describe(self) -> str:
        """What each Sentinel and data server says, and the Sentinels' last log lines: for
        the message of a failover that did not settle."""
        lines = []
        for sentinel in self.sentinel_servers:
            try:
                with sentinel.client(timeout=1.0) as client:
                    said = client.sentinel_get_master_addr_by_name(SERVICE)
            except redis.RedisError as exc:
                said = repr(exc)
            lines.append(f"sentinel {sentinel.port}: primary {said}")
        for server in self.servers:
            try:
                info = replication_info(server)
                state = {k: info.get(k) for k in ("role", "master_port", "master_link_status")}
            except redis.RedisError as exc:
                state = {"error": repr(exc)}
            lines.append(f"server {self.address(server)}: {state}")
        for sentinel in self.sentinel_servers:
            path = sentinel.log_path
            log = path.read_text(errors="replace") if path.exists() else ""
            tail = "\n  ".join(log.splitlines()[-15:])
            lines.append(f"sentinel {sentinel.port} log:\n  {tail}")
        return "\n".join(lines)

    def _sentinel_failover(self, timeout: float) -> None:
        # NOGOODSLAVE / INPROG while a Sentinel's view is still settling: try again.
        def ask() -> bool:
            sentinel = next(s for s in self.sentinel_servers if s.running)
            with sentinel.client(timeout=1.0) as client:
                return bool(client.sentinel_failover(SERVICE))

        wait_for(ask, timeout, "a Sentinel accepting SENTINEL FAILOVER")

    def _wait_settled(self, old: RedisServer, timeout: float) -> RedisServer:
        found: list[RedisServer] = []

        def settled() -> bool:
            reported = set()
            for sentinel in self.sentinel_servers:
                if sentinel.running:
                    with sentinel.client(timeout=1.0) as client:
                        reported.add(client.sentinel_get_master_addr_by_name(SERVICE))
            if len(reported) != 1:
                return False
            new = self.server_at(reported.pop())
            if new is old or not new.running:
                return False
            with new.client(timeout=1.0) as client:
                if client.info("replication")["role"] != "master":
                    return False
                client.delete(PROBE_KEY)
            others = [s for s in self.servers if s is not new and s.running]
            if not all(self._replicates_from(server, new) for server in others):
                return False
            found[:] = [new]
            return True

        wait_for(settled, timeout, f"a new primary in place of {self.address(old)}")
        return found[0]

    def _replicates_from(self, server: RedisServer, primary: RedisServer) -> bool:
        info = replication_info(server)
        host, port = self.address(primary)
        if info["role"] != "slave" or (info["master_host"], info["master_port"]) != (host, port):
            return False
        # A held link cannot come up; pointing at the right primary is all it can do.
        return info["master_link_status"] == "up" or self.address(server)[1] in self._cut

    def _wait_replicating(self, primary: RedisServer, timeout: float) -> None:
        for server in self.servers:
            if server is not primary:
                wait_for(
                    lambda s=server: self._replicates_from(s, primary),  # type: ignore[misc]
                    timeout,
                    f"{self.address(server)} replicating from {self.address(primary)}",
                )

    def _sentinels_know_all(self) -> bool:
        replicas = {self.address(s) for s in self.servers[1:]}
        for sentinel in self.sentinel_servers:
            with sentinel.client(timeout=1.0) as client:
                master = client.sentinel_master(SERVICE)
                known = {
                    (r["ip"], r["port"])
                    for r in client.sentinel_slaves(SERVICE)
                    if not (r["is_sdown"] or r["is_disconnected"])
                    and r["master-link-status"] == "ok"
                }
                others = [
                    s
                    for s in client.sentinel_sentinels(SERVICE)
                    if not (s["is_sdown"] or s["is_disconnected"])
                ]
            if not master["is_master"] or master["is_sdown"]:
                return False
            if known != replicas or len(others) != len(self.sentinel_servers) - 1:
                return False
        return True
