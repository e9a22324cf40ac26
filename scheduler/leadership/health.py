"""Health of the election: the stall watchdog, what is known of the backend, liveness.

As client-go's ``healthzadaptor.go`` sits beside its loop, this module answers the probes
(``/healthz``, ``/readyz``) and detects stalls; it decides nothing about the lease itself.

* :class:`StallWatchdog` ticks every :data:`WATCHDOG_TICK` seconds; a longer gap than
  :data:`STALL_THRESHOLD` between two ticks means the whole process stood still (GC,
  SIGSTOP, a frozen VM). From then on the lease is not trusted until a renewal *sent* after
  the stall confirms it.
* :class:`BackendHealth` knows whether the backend answered last time, with the capped
  backoff between attempts while it does not, and whether it refused this replica for good.
* :func:`liveness_problem` says why the elector should be restarted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from scheduler.clock import Clock
from scheduler.errors import BackendError
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.logs import get_logger

#: Seconds between watchdog ticks; a gap longer than STALL_THRESHOLD between two ticks means
#: the whole process stood still (GC, SIGSTOP, a frozen VM).
WATCHDOG_TICK = 0.25
STALL_THRESHOLD = 1.0
#: Seconds; first and largest pause between attempts while the backend is unreachable.
BACKOFF_START = 0.2
BACKOFF_CAP = 5.0


class StallWatchdog:
    """Detects that the process stood still, and says when the lease is trusted again.

    Args:
        clock: monotonic time; the watchdog waits on it between ticks.
        leading: whether this replica holds a term (for the log line).
        on_stall: called after a stall is logged (on the watchdog thread; it must not
            block): it should re-validate the lease at once.
        replica_id: for the log lines.
    """

    def __init__(
        self,
        clock: Clock,
        leading: Callable[[], bool],
        on_stall: Callable[[], None],
        replica_id: str,
    ) -> None:
        self._clock = clock
        self._leading = leading
        self._on_stall = on_stall
        self._log = get_logger(replica=replica_id)
        self._last_tick = clock.monotonic()
        # After a stall, only a renewal *sent* after this instant re-validates the lease.
        self._revalidate_after: float | None = None

    def start(self, stop: threading.Event) -> None:
        """Tick on a thread of its own until ``stop`` is set."""
        self._last_tick = self._clock.monotonic()
        threading.Thread(target=self._run, args=(stop,), name="baton-watchdog", daemon=True).start()

    def silent_for(self) -> float:
        """Seconds since the last tick."""
        return self._clock.monotonic() - self._last_tick

    def stall_reason(self) -> str | None:
        """Why the lease cannot be trusted after a stall, or ``None``."""
        if self.silent_for() > STALL_THRESHOLD:
            return "process stalled; lease not re-validated yet"
        if self._revalidate_after is not None:
            return "process stalled; lease being re-validated"
        return None

    def confirmed(self, sent_at: float) -> bool:
        """The backend granted the lease to a request sent at ``sent_at``.

        Returns:
            True if that ended a re-validation (the request left after the last stall).
        """
        after = self._revalidate_after
        if after is not None and sent_at >= after:
            self._revalidate_after = None
            return True
        return False

    def _run(self, stop: threading.Event) -> None:
        while not self._clock.wait(stop, WATCHDOG_TICK):
            now = self._clock.monotonic()
            gap = now - self._last_tick
            self._last_tick = now
            if gap > STALL_THRESHOLD:
                self._revalidate_after = now
                self._log.warning("stall_detected", seconds=round(gap, 3), leading=self._leading())
                self._on_stall()


class BackendHealth:
    """Whether the backend answers, the backoff while it does not, and a refusal for good.

    Args:
        clock: monotonic time, for how long the backend was down.
        replica_id: for the log lines.
    """

    def __init__(self, clock: Clock, replica_id: str) -> None:
        self._clock = clock
        self._log = get_logger(replica=replica_id)
        self._ok = False
        self._on_ok: list[Callable[[], None]] = []
        self._backoff = 0.0
        self._unavailable_since: float | None = None
        self._refusal: str | None = None
        self._refusal_lock = threading.Lock()

    @property
    def ok(self) -> bool:
        """True once a backend call succeeded and until one fails."""
        return self._ok

    def set_ok(self, ok: bool) -> None:
        """Record whether the last backend call was answered; on the change to answered,
        call every :meth:`on_ok` callback."""
        was, self._ok = self._ok, ok
        if ok and not was:
            for callback in self._on_ok:
                callback()

    def on_ok(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (it must not block) each time the backend answers again after a
        failed call (or answers for the first time)."""
        self._on_ok.append(callback)

    def unavailable(self, exc: BackendError) -> float:
        """The backend did not answer: log it (``backend_unavailable``).

        Returns:
            Seconds to wait before the next attempt (doubling, from BACKOFF_START to
            BACKOFF_CAP).
        """
        self.set_ok(False)
        self._backoff = min(BACKOFF_CAP, max(BACKOFF_START, self._backoff * 2))
        if self._unavailable_since is None:
            self._unavailable_since = self._clock.monotonic()
        self._log.warning("backend_unavailable", error=str(exc), retry_in=round(self._backoff, 3))
        return self._backoff

    def available(self) -> None:
        """The backend answered: reset the backoff (``backend_available`` after an outage)."""
        self.set_ok(True)
        if self._unavailable_since is not None:
            down = self._clock.monotonic() - self._unavailable_since
            self._log.info("backend_available", down_for=round(down, 3))
        self._unavailable_since = None
        self._backoff = 0.0

    @property
    def refusal(self) -> str | None:
        """Why the backend refuses this replica for good, or ``None``."""
        return self._refusal

    def refused(self, exc: BackendError, recheck_every: float) -> None:
        """The backend refused for good: remember why, logged once per cause at error level
        (``backend_refused``)."""
        cause = str(exc)
        with self._refusal_lock:
            new = self._refusal != cause
            self._refusal = cause
        self.set_ok(False)
        if new:
            self._log.error(
                "backend_refused",
                error=cause,
                kind=type(exc).__name__,
                recheck_every=recheck_every,
                detail="permanent: not retried; not leading until an operator fixes it",
            )

    def refusal_cleared(self) -> None:
        """A re-check passed: forget the refusal (``backend_refusal_cleared``)."""
        with self._refusal_lock:
            cause, self._refusal = self._refusal, None
        self._backoff = 0.0
        self._log.info("backend_refusal_cleared", error=cause)


def liveness_problem(
    running: bool, watchdog_silent_for: float, term: Term | None, timings: LeaseTimings, now: float
) -> str | None:
    """Why an elector is not healthy (``/healthz``), or ``None``.

    Args:
        running: whether its loop thread is alive.
        watchdog_silent_for: seconds since the stall watchdog last ticked.
        term: the term it holds (ended or not), or ``None``.
        timings: for how long past the renew deadline a loop may still be in a backend call.
        now: the monotonic time.
    """
    if not running:
        return "elector thread is not running"
    if watchdog_silent_for > STALL_THRESHOLD * 5:
        return f"watchdog silent for {watchdog_silent_for:.1f} s"
    if term is not None and not term.lost.is_set():
        overdue = now - term.leads_until()
        # Past the renew deadline the loop must have ended the term within one bounded
        # backend call; still claiming leadership means it is wedged.
        if overdue > timings.op_timeout + timings.renew_interval:
            return f"still claiming leadership {overdue:.1f} s past the renew deadline"
    return None
