"""Leader election loop: acquire, renew, give up at the deadline, release on stop.

The policy lives here, above the storage (as in client-go's ``leaderelection``): the backend
only answers single bounded calls. A leadership *term* begins with each successful acquire
and ends exactly once, with the reason, when the lease is lost, the renew deadline passes, or
the replica stops. Whether a term is still valid is computed from the monotonic clock at the
moment of asking, so a stalled process (GC, SIGSTOP, a frozen VM) never trusts a lease whose
deadline passed while it was not looking, whatever the elector thread is doing.

Errors are of two kinds (``scheduler.errors``). A transient one (``BackendUnavailable``) is
retried with capped backoff and logged as ``backend_unavailable`` at each attempt. A permanent
one (``BackendPermanentError``: credentials, an ACL, a read-only database, a newer schema) is
not: it ends leadership, is logged once (``backend_refused``), makes ``/readyz`` fail with its
text, and is only re-checked, silently, every ``REFUSAL_RECHECK`` seconds.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from scheduler.backends.base import LeaseBackend
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import BackendError, BackendPermanentError, LeaseLost
from scheduler.leadership.lease import Holder, Lease
from scheduler.leadership.members import RESIGN, Member
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.logs import get_logger
from scheduler.ops.metrics import Metrics

#: Seconds; first and largest pause between attempts while the backend is unreachable.
BACKOFF_START = 0.2
BACKOFF_CAP = 5.0
#: Seconds between re-checks (a full :meth:`~scheduler.backends.base.LeaseBackend.preflight`)
#: of a backend that refused this replica for good (credentials, ACL, read-only database,
#: schema): slow and silent, so that an operator's fix is noticed without a restart while
#: the refusal is logged once, not at every attempt.
REFUSAL_RECHECK = 30.0
#: Seconds between watchdog ticks; a gap longer than STALL_THRESHOLD between two ticks means
#: the whole process stood still (GC, SIGSTOP, a frozen VM).
WATCHDOG_TICK = 0.25
STALL_THRESHOLD = 1.0


def _version() -> str:
    from scheduler import __version__

    return __version__


class Term:
    """One leadership term: a lease, renewed in place, and a ``lost`` event set once at its end.

    Args:
        lease: the lease as acquired.
        timings: for the renew deadline.
        clock: monotonic time source.
    """

    def __init__(self, lease: Lease, timings: LeaseTimings, clock: Clock) -> None:
        self._lease = lease
        self._timings = timings
        self._clock = clock
        self._lock = threading.Lock()
        self.lost = threading.Event()
        self.token = lease.token
        self.reason = ""

    @property
    def lease(self) -> Lease:
        with self._lock:
            return self._lease

    def renewed(self, lease: Lease) -> None:
        with self._lock:
            self._lease = lease

    def lease_deadline(self) -> float:
        """Local monotonic deadline of the lease; ``-inf`` once the term has ended."""
        if self.lost.is_set():
            return -math.inf
        return self.lease.deadline

    def leads_until(self) -> float:
        """Monotonic instant the term ends unless renewed: the renew deadline, capped by the
        lease deadline."""
        lease = self.lease
        return min(lease.deadline, lease.sent_at + self._timings.renew_deadline)

    def valid(self) -> bool:
        """True while the term has not ended and its renew deadline has not passed."""
        return not self.lost.is_set() and self._clock.monotonic() < self.leads_until()

    def end(self, reason: str) -> bool:
        """End the term; returns False if it had already ended."""
        with self._lock:
            if self.lost.is_set():
                return False
            self.reason = reason
            self.lost.set()
            return True


@dataclass(frozen=True, slots=True)
class LeadershipAcquired:
    """Event: this replica became leader."""

    term: Term


@dataclass(frozen=True, slots=True)
class LeadershipLost:
    """Event: this replica's term ended; ``reason`` says why."""

    term: Term
    reason: str


Listener = Callable[[LeadershipAcquired | LeadershipLost], None]


class Elector:
    """Runs the election for ``name`` in a background thread.

    Args:
        backend: the lease store.
        name: election name (the cluster).
        holder: this replica's identity.
        timings: lease_ttl, renew_interval, renew_deadline (validated together).
        clock: monotonic time for every deadline.
        metrics: where renewals and transitions are counted (a private set by default).
        jobs: the names of the jobs this replica schedules, announced with its presence
            (``baton pause`` checks a name against them).
    """

    def __init__(
        self,
        backend: LeaseBackend,
        name: str,
        holder: Holder,
        timings: LeaseTimings,
        clock: Clock = SYSTEM_CLOCK,
        metrics: Metrics | None = None,
        jobs: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.metrics = metrics or Metrics()
        self.name = name
        self.holder = holder
        self.timings = timings
        self.clock = clock
        self.log = get_logger(replica=holder.replica_id)
        self._listeners: list[Listener] = []
        self._term: Term | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = 0.0
        self._unavailable_since: float | None = None
        self._last_tick = clock.monotonic()
        self._backend_ok = False
        self._on_backend_ok: list[Callable[[], None]] = []
        # After a stall, only a renewal *sent* after this instant re-validates the lease.
        self._revalidate_after: float | None = None
        #: Operator controls (resign, pause:<job>) as last read from the backend.
        self.controls: dict[str, str] = {}
        self._started = clock.now()
        self._announced_at: float | None = None
        self._holdoff_until = -math.inf
        self._on_resign: Callable[[Term], None] | None = None
        self._jobs = tuple(jobs)
        #: Why the backend refuses this replica for good (the error's text), or ``None``.
        self._refusal: str | None = None
        self._refusal_lock = threading.Lock()
        #: Seconds between re-checks while refused (default REFUSAL_RECHECK).
        self.refusal_recheck = REFUSAL_RECHECK

    # -- public API -------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with LeadershipAcquired / LeadershipLost events.

        Listeners run on the elector thread and must not block; exceptions are logged.
        """
        self._listeners.append(listener)

    @property
    def backend_ok(self) -> bool:
        """True once a backend call succeeded and until one fails (readiness; claims wait
        for it after a failed call)."""
        return self._backend_ok

    @backend_ok.setter
    def backend_ok(self, ok: bool) -> None:
        was, self._backend_ok = self._backend_ok, ok
        if ok and not was:
            for callback in self._on_backend_ok:
                callback()

    def on_backend_ok(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (it must not block) each time the backend answers again after a
        failed call (or answers for the first time)."""
        self._on_backend_ok.append(callback)

    def current_term(self) -> Term | None:
        """The term this replica leads in right now, or ``None`` (computed, no network).

        ``None`` also while a stall is not yet re-validated by a renewal: after any pause,
        no fire starts until the backend has confirmed the lease again.
        """
        term = self._term
        if term is not None and term.valid() and self.stall_reason() is None:
            return term
        return None

    def stall_reason(self) -> str | None:
        """Why the lease cannot be trusted after a stall, or ``None``."""
        if self.clock.monotonic() - self._last_tick > STALL_THRESHOLD:
            return "process stalled; lease not re-validated yet"
        if self._revalidate_after is not None:
            return "process stalled; lease being re-validated"
        return None

    def on_resign_request(self, handler: Callable[[Term], None]) -> None:
        """Call ``handler(term)`` (once, on the elector thread; it must not block) when an
        operator asks this leader to step down (``baton resign``)."""
        self._on_resign = handler

    def is_leader(self) -> bool:
        return self.current_term() is not None

    def start(self) -> None:
        self._last_tick = self.clock.monotonic()
        self._thread = threading.Thread(target=self._run, name="baton-elector", daemon=True)
        self._thread.start()
        threading.Thread(target=self._watchdog, name="baton-watchdog", daemon=True).start()

    def stop(self, release: bool = True, timeout: float | None = None) -> None:
        """Stop electing; end a running term and (by default) release the lease.

        Followers are woken by the release at once (pub/sub, or the embedded backend's
        change counter).
        """
        self._stop.set()
        self._wake.set()
        # Release first, then wait for the loop: the loop may be inside a bounded backend
        # call, and a follower should not wait for it. A renewal landing after the release
        # finds the term already ended.
        term = self._term
        if term is not None:
            self._end_term(term, "shutdown", release=release)
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.timings.op_timeout * 3)

    def resign(self, holdoff: float | None = None) -> None:
        """Step down now (release) and go on as a follower, not competing for ``holdoff``
        seconds (default lease_ttl) so that another replica takes over."""
        term = self._term
        if term is not None:
            wait = self.timings.lease_ttl if holdoff is None else holdoff
            self._holdoff_until = self.clock.monotonic() + wait
            self._end_term(term, "resigned", release=True)
            self._wake.set()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._refusal is not None:
                    self._recheck()
                elif self._term is None:
                    self._follow()
                else:
                    self._lead(self._term)
            except Exception:  # the loop must survive anything a backend throws at it
                self.log.exception("elector_error")
                self._sleep(BACKOFF_START)

    def _follow(self) -> None:
        holdoff = self._holdoff_until - self.clock.monotonic()
        if holdoff > 0:
            # Just resigned: let another replica take the lease.
            if self._due():
                self._announce()
            self.backend.wait_for_change(self.name, min(holdoff, self.timings.renew_interval))
            return
        try:
            lease = self.backend.try_acquire(self.name, self.holder, self.timings.lease_ttl)
            record = None if lease is not None else self.backend.read(self.name)
        except BackendPermanentError as exc:
            self.report(exc)
            return
        except BackendError as exc:
            self._unavailable(exc)
            return
        self._available()
        if lease is not None:
            # Nothing else before the term begins: a handover is measured in milliseconds.
            self._begin_term(lease)
            return
        if self._due():
            # Followers keep presence and controls fresh too, so that a new leader already
            # knows which jobs are paused.
            self._announce()
            self._refresh_controls()
        # Wait for a release (instant wake-up) or for the holder's lease to run out on the
        # server (we know when from its remaining TTL), whichever comes first.
        wait = self.timings.renew_interval
        if record is not None and record.ttl_left is not None:
            wait = min(wait, max(record.ttl_left, 0.0) + 0.001)
        if not self._stop.is_set():
            self.backend.wait_for_change(self.name, wait)

    def _lead(self, term: Term) -> None:
        lease = term.lease
        next_renewal = lease.sent_at + self.timings.renew_interval
        self._sleep(next_renewal - self.clock.monotonic())
        if self._stop.is_set() or term.lost.is_set():
            if term.lost.is_set() and self._term is term:
                self._term = None
            return
        if self.clock.monotonic() >= term.leads_until():
            # We could not renew in time (or were paused past the deadline): stop trusting
            # the lease. Release it if it is still ours so a follower need not wait it out.
            self._end_term(term, "renew_deadline", release=True)
            return
        sent = self.clock.monotonic()
        try:
            renewed = self.backend.renew(lease)
        except LeaseLost as exc:
            self.metrics.lease_renewals.labels("lost").inc()
            self._end_term(term, exc.reason, release=False)
            return
        except BackendPermanentError as exc:
            self.metrics.lease_renewals.labels("error").inc()
            self.report(exc)
            return
        except BackendError as exc:
            self.backend_ok = False
            self.metrics.lease_renewals.labels("error").inc()
            left = term.leads_until() - self.clock.monotonic()
            self.log.warning(
                "lease_renew_failed", error=str(exc), token=term.token, leads_for=round(left, 3)
            )
            # Retry soon, but leave room for another bounded attempt before the deadline.
            self._sleep(min(self.timings.renew_interval / 4, max(left, 0.0) / 2))
            return
        now = self.clock.monotonic()
        self.backend_ok = True
        self.metrics.lease_renewals.labels("ok").inc()
        self.metrics.lease_renew_latency.observe(now - sent)
        self.metrics.lease_time_left.set(renewed.deadline - now)
        if renewed.sent_at >= term.leads_until():
            # The request left after the deadline (the process stalled in between): the term
            # is over even though the server agreed; give the lease back.
            term.renewed(renewed)
            self._end_term(term, "renew_deadline", release=True)
            return
        term.renewed(renewed)
        if self._revalidate_after is not None and renewed.sent_at >= self._revalidate_after:
            self._revalidate_after = None
            self.log.info("lease_revalidated", token=term.token)
        # Presence and controls ride along with the renewal, but only while two more bounded
        # calls still leave a whole renewal attempt before the renew deadline: the lease
        # comes first.
        spare = renewed.sent_at + self.timings.renew_deadline - self.clock.monotonic()
        if spare > 3 * self.timings.op_timeout and self._due():
            self._announce()
            self._refresh_controls()
        if self.controls.get(RESIGN) == str(term.token) and self._on_resign is not None:
            self.log.info("resign_requested", token=term.token)
            self._on_resign(term)
            self._on_resign_seen(term)

    # -- transitions ------------------------------------------------------------------------

    def _on_resign_seen(self, term: Term) -> None:
        # The request names this term's token: clear it so a later term is not affected.
        try:
            self.backend.set_control(self.name, RESIGN, None)
        except BackendError as exc:
            self.log.warning("control_update_failed", error=str(exc))
        self.controls.pop(RESIGN, None)

    def _due(self) -> bool:
        """True when presence and controls were last refreshed a renew interval ago."""
        last = self._announced_at
        return last is None or self.clock.monotonic() - last >= self.timings.renew_interval

    def _announce(self) -> None:
        """Refresh this replica's presence record."""
        now = self.clock.monotonic()
        member = Member(
            replica_id=self.holder.replica_id,
            host=self.holder.host,
            version=_version(),
            started=self._started,
            last_seen=self.clock.now(),
            jobs=self._jobs,
        )
        try:
            self.backend.announce(self.name, member, self.timings.lease_ttl)
            self._announced_at = now
        except BackendPermanentError as exc:
            self.report(exc)
        except BackendError as exc:
            self.log.warning("announce_failed", error=str(exc))

    def withdraw(self) -> None:
        """Remove this replica's presence record (clean shutdown); best effort."""
        try:
            self.backend.withdraw(self.name, self.holder.replica_id)
        except BackendError as exc:
            self.log.warning("withdraw_failed", error=str(exc))

    def refresh_controls(self) -> bool:
        """Re-read the operator controls now (a new leader does before its catch-up).

        Returns:
            True if they were read; False if not (the last ones read are kept).
        """
        return self._refresh_controls()

    def _refresh_controls(self) -> bool:
        try:
            self.controls = self.backend.controls(self.name)
        except BackendPermanentError as exc:
            self.report(exc)
        except BackendError as exc:
            self.log.warning("controls_unavailable", error=str(exc))
        else:
            return True
        return False

    def _watchdog(self) -> None:
        while not self._stop.wait(WATCHDOG_TICK):
            now = self.clock.monotonic()
            gap = now - self._last_tick
            self._last_tick = now
            if gap > STALL_THRESHOLD:
                self._revalidate_after = now
                self.log.warning(
                    "stall_detected", seconds=round(gap, 3), leading=self._term is not None
                )
                self._wake.set()  # re-validate (renew) at once

    def _begin_term(self, lease: Lease) -> None:
        if self._revalidate_after is not None and lease.sent_at >= self._revalidate_after:
            self._revalidate_after = None  # a fresh acquisition is a validation
        term = Term(lease, self.timings, self.clock)
        self._term = term
        self.metrics.is_leader.set(1)
        self.metrics.leader_transitions.inc()
        self.metrics.lease_time_left.set(lease.deadline - self.clock.monotonic())
        self.log.info("leadership_acquired", token=lease.token, cluster=self.name)
        self._emit(LeadershipAcquired(term))
        # Backends that hear of a loss first (ZooKeeper watches) end the term at once.
        self.backend.watch(lease, lambda reason: self._lost_by_backend(term, reason))

    def lease_lost(self, term: Term, reason: str) -> None:
        """The backend refused a call made under ``term``'s lease (``LeaseLost``, an answer
        checked atomically on the server): end the term now, as a watch would, instead of
        leading on until the next renewal finds out."""
        self._lost_by_backend(term, reason)

    def _lost_by_backend(self, term: Term, reason: str) -> None:
        self._end_term(term, reason, release=False)
        self._wake.set()

    def _end_term(self, term: Term, reason: str, release: bool) -> None:
        if not term.end(reason):
            return
        if self._term is term:
            self._term = None
        self.metrics.is_leader.set(0)
        self.metrics.leadership_lost.labels(reason).inc()
        self.log.warning("leadership_lost", reason=reason, token=term.token, cluster=self.name)
        self._emit(LeadershipLost(term, reason))
        if release:
            try:
                self.backend.release(term.lease)
                self.log.info("lease_released", token=term.token, cluster=self.name)
            except BackendError as exc:
                self.log.warning("lease_release_failed", error=str(exc), token=term.token)

    def _emit(self, event: LeadershipAcquired | LeadershipLost) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                self.log.exception("listener_failed", listener=repr(listener))

    # -- helpers ----------------------------------------------------------------------------

    @property
    def refusal(self) -> str | None:
        """Why the backend refuses this replica for good (credentials, ACL, read-only
        database, schema), or ``None``; ``/readyz`` reports it."""
        return self._refusal

    def report(self, exc: BackendError) -> None:
        """Act on a backend error: a permanent one (:class:`BackendPermanentError`) ends
        leadership and stops this replica competing until a re-check passes.

        The refusal is logged once per cause at error level (``backend_refused``), not at
        every attempt, and re-checked every ``refusal_recheck`` seconds (a full preflight,
        silently). Transient errors are left to the loop's backoff. Called by the loop and
        by the runner (a claim refused for good); must not block beyond one release.
        """
        if not isinstance(exc, BackendPermanentError):
            return
        cause = str(exc)
        with self._refusal_lock:
            new = self._refusal != cause
            self._refusal = cause
        self.backend_ok = False
        if new:
            self.log.error(
                "backend_refused",
                error=cause,
                kind=type(exc).__name__,
                recheck_every=self.refusal_recheck,
                detail="permanent: not retried; not leading until an operator fixes it",
            )
        term = self._term
        if term is not None:
            self._end_term(term, "backend_refused", release=True)
        self._wake.set()

    def _recheck(self) -> None:
        """While refused: wait ``refusal_recheck`` seconds, then run the preflight again."""
        term = self._term
        if term is not None:
            # Begun by an acquire that raced with a refusal reported by another thread.
            self._end_term(term, "backend_refused", release=True)
        if self._stop.wait(self.refusal_recheck):
            return
        try:
            self.backend.preflight(self.name)
        except BackendPermanentError as exc:
            self.report(exc)  # logged again only if the cause changed
            return
        except BackendError:
            return  # no answer: nothing learnt, still refused
        with self._refusal_lock:
            cause, self._refusal = self._refusal, None
        self._backoff = 0.0
        self.log.info("backend_refusal_cleared", error=cause)

    def health_problem(self) -> str | None:
        """Why this elector is not healthy (dead thread, wedged loop), or ``None``."""
        if self._thread is None or not self._thread.is_alive():
            return "elector thread is not running"
        now = self.clock.monotonic()
        if now - self._last_tick > STALL_THRESHOLD * 5:
            return f"watchdog silent for {now - self._last_tick:.1f} s"
        term = self._term
        if term is not None and not term.lost.is_set():
            overdue = now - term.leads_until()
            # Past the renew deadline the loop must have ended the term within one bounded
            # backend call; still claiming leadership means it is wedged.
            if overdue > self.timings.op_timeout + self.timings.renew_interval:
                return f"still claiming leadership {overdue:.1f} s past the renew deadline"
        return None

    def _unavailable(self, exc: BackendError) -> None:
        self.backend_ok = False
        self._backoff = min(BACKOFF_CAP, max(BACKOFF_START, self._backoff * 2))
        if self._unavailable_since is None:
            self._unavailable_since = self.clock.monotonic()
        self.log.warning("backend_unavailable", error=str(exc), retry_in=round(self._backoff, 3))
        self._sleep(self._backoff)

    def _available(self) -> None:
        self.backend_ok = True
        if self._unavailable_since is not None:
            down = self.clock.monotonic() - self._unavailable_since
            self.log.info("backend_available", down_for=round(down, 3))
        self._unavailable_since = None
        self._backoff = 0.0

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds)
            self._wake.clear()
