"""A loopback TCP proxy that can cut (blackhole) or slow (delay) a replica's backend link.

``tc netem`` is not available in this kernel, so each replica is pointed at its own proxy
port in front of the backend server, and partitions are made there:

* ``blackhole()``: connections are still accepted, but no byte is forwarded either way;
  what arrives is held, as a TCP peer's retransmissions would be, and delivered in order
  after ``heal()`` (so a request a client gave up on may still reach the server late: the
  nastier, realistic case). A side that closed meanwhile is closed after its data.
* ``delay(seconds)``: every chunk is forwarded ``seconds`` after it arrived, order kept.
* ``delay_after(trigger, seconds)``: forward at once until a chunk from the client matches
  ``trigger``; that chunk still goes out at once, everything after it (its answer first)
  ``seconds`` late. Makes "the request landed, its answer did not come in time" exact.
* ``heal()``: back to forwarding at once.

All proxies of a run share one asyncio loop in a daemon thread; the control methods may be
called from any thread. Binds and connects to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

HOST = "127.0.0.1"
CHUNK = 65536


class ProxyLoop:
    """The event loop thread shared by the proxies of one run."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="chaos-proxy", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 10.0) -> Any:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        """Cancel every connection task, then stop the loop thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            self.run(cancel_all(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class _Pipe:
    """One direction of one connection: a queue of (due time, data) drained in order."""

    def __init__(self, proxy: Proxy, writer: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.writer = writer
        self.queue: deque[tuple[float, bytes]] = deque()
        self.closed = False  # the reading side reached EOF; close after the data
        self.wake = asyncio.Event()

    def push(self, data: bytes) -> None:
        self.queue.append((time.monotonic() + self.proxy.latency, data))
        self.wake.set()

    async def drain(self) -> None:
        try:
            while True:
                if self.queue and not self.proxy.holding:
                    due, data = self.queue[0]
                    wait = due - time.monotonic()
                    if wait > 0:
                        self.wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self.wake.wait(), wait)
                        continue
                    self.queue.popleft()
                    self.writer.write(data)
                    await self.writer.drain()
                    continue
                if self.closed and not self.queue:
                    break
                self.wake.clear()
                await self.wake.wait()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                self.writer.close()


class Proxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream>`` through ``loop``.

    Args:
        loop: the shared proxy loop.
        upstream: the backend server's port.
    """

    def __init__(self, loop: ProxyLoop, upstream: int) -> None:
        self._loop = loop
        self.upstream = upstream
        self.latency = 0.0
        self.holding = False
        self._trigger: tuple[Callable[[bytes], bool], float] | None = None
        self._pipes: set[_Pipe] = set()
        self._server: asyncio.Server = loop.run(
            asyncio.start_server(self._accept, HOST, 0, reuse_address=True)
        )
        self.port: int = self._server.sockets[0].getsockname()[1]

    @property
    def mode(self) -> str:
        if self.holding:
            return "blackhole"
        return f"delay {self.latency:g}s" if self.latency else "open"

    def blackhole(self) -> None:
        """Forward nothing (hold every byte) until :meth:`heal`."""
        self._loop.loop.call_soon_threadsafe(self._set, True, self.latency)

    def delay(self, seconds: float) -> None:
        """Forward every chunk ``seconds`` after it arrives, until :meth:`heal`."""
        self._loop.loop.call_soon_threadsafe(self._set, False, seconds)

    def delay_after(self, trigger: Callable[[bytes], bool], seconds: float) -> None:
        """Delay by ``seconds`` everything after the first client chunk matching ``trigger``
        (called on the proxy thread with each chunk the client sends)."""

        def arm() -> None:
            self._trigger = (trigger, seconds)

        self._loop.loop.call_soon_threadsafe(arm)

    def heal(self) -> None:
        """Forward at once again; held data goes out now, in order."""
        self._loop.loop.call_soon_threadsafe(self._set, False, 0.0)

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            for pipe in list(self._pipes):
                pipe.closed = True
                pipe.queue.clear()
                pipe.wake.set()

        with contextlib.suppress(Exception):
            self._loop.run(shut())

    def _set(self, holding: bool, latency: float) -> None:
        self.holding, self.latency = holding, latency
        self._trigger = None
        for pipe in self._pipes:
            if not holding and latency == 0:
                # Healing releases what was delayed too.
                pipe.queue = deque((-math.inf, data) for _, data in pipe.queue)
            pipe.wake.set()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream)
        except OSError:
            writer.close()  # the server is down: the client sees a reset, as it would
            return
        to_server, to_client = _Pipe(self, up_writer), _Pipe(self, writer)
        self._pipes |= {to_server, to_client}
        try:
            await asyncio.gather(
                self._pump(reader, to_server, from_client=True),
                self._pump(up_reader, to_client, from_client=False),
                to_server.drain(),
                to_client.drain(),
            )
        finally:
            self._pipes -= {to_server, to_client}

    async def _pump(self, reader: asyncio.StreamReader, pipe: _Pipe, from_client: bool) -> None:
        try:
            while data := await reader.read(CHUNK):
                pipe.push(data)
                if from_client and self._trigger is not None and self._trigger[0](data):
                    self.latency, self._trigger = self._trigger[1], None
        except (ConnectionError, OSError):
            pass
        finally:
            pipe.closed = True
            pipe.wake.set()
