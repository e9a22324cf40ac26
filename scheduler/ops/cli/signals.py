"""The stop flag of ``baton run``: set by SIGTERM or SIGINT, waited on by the main thread.

Why not a bare :class:`threading.Event`: a signal sent to the process is delivered to any
thread that does not block it. When it lands on a worker thread (the elector, a pool worker,
the ZooKeeper client's), CPython's C handler only notes it; the Python handler runs in the main
thread the next time that thread executes bytecode. A main thread blocked in ``Event.wait()``
sits in a semaphore wait that the signal did not interrupt, so SIGTERM was acted on only when
a second signal happened to hit the main thread — a leader told to hand over kept its lease
until killed (seen in CI: no ``signal_received`` for five seconds).

``signal.set_wakeup_fd`` makes the C handler also write a byte to a pipe, whichever thread it
runs on; the main thread waits in ``select`` on that pipe, wakes, and on its way back to
bytecode runs the Python handler, which sets the flag.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

Handler = Callable[[int], None]
# What signal.signal returns and accepts back (typeshed's private _HANDLER).
_SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class SignalStop:
    """A stop flag the main thread can wait on without missing a signal.

    Create it in the main thread (``set_wakeup_fd`` may only be called there) and call
    :meth:`close` when done, which restores the previous wakeup fd and handlers.
    """

    def __init__(self, on_signal: Handler, signals: tuple[int, ...]) -> None:
        self._event = threading.Event()
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)  # the C handler must never block on a full pipe
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._previous: dict[int, _SignalHandler] = {}

        def handler(signum: int, frame: FrameType | None) -> None:
            on_signal(signum)

        for signum in signals:
            self._previous[signum] = signal.signal(signum, handler)

    def set(self) -> None:
        self._event.set()
        # A full pipe means a wake is pending anyway; a closed one, that nobody waits.
        with contextlib.suppress(OSError):
            os.write(self._write, b"\0")  # wake a main thread waiting in select

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until set or ``timeout`` seconds (None: for ever); return whether set."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._event.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            # Returns on a signal caught by any thread (the wakeup byte) or on set(); the loop
            # back to the is_set check runs any pending Python signal handler first.
            ready, _, _ = select.select([self._read], [], [], left)
            if ready:
                self._drain()
        return self._event.is_set()

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        os.close(self._read)
        os.close(self._write)
