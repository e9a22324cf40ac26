"""Leader election loop: acquire, renew, give up at the deadline, release on stop.

The policy lives here, above the storage (as in client-go's ``leaderelection``): the backend
only answers single bounded calls. A leadership :class:`~scheduler.leadership.term.Term`
begins with each successful acquire and ends exactly once, with the reason, when the lease is
lost, the renew deadline passes, or the replica stops; listeners hear of both
(:mod:`scheduler.leadership.events`). The loop waits only through its
:class:`~scheduler.clock.Clock`, so a test drives it on a fake one.

Beside the loop, each in its own module: the operator controls it refreshes
(:mod:`~scheduler.leadership.controls`), the presence record it announces
(:mod:`~scheduler.leadership.presence`), and the stall watchdog, backend state and liveness
(:mod:`~scheduler.leadership.health`). Metrics are the replica's, passed in.

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

from scheduler.backends.base import LeaseBackend, watch_lease
from scheduler.backends.states import LossReason
from scheduler.clock import SYSTEM_CLOCK, Clock
from scheduler.errors import BackendError, BackendPermanentError, LeaseLost
from scheduler.leadership.controls import LiveControls
from scheduler.leadership.events import Listener, TermEnded, TermEvent, TermStarted
from scheduler.leadership.health import (
    BACKOFF_START,
    BackendHealth,
    StallWatchdog,
    liveness_problem,
)
from scheduler.leadership.lease import Holder, Lease
from scheduler.leadership.presence import Announcer
from scheduler.leadership.term import Term
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.logs import get_logger
from scheduler.ops.metrics import Metrics

#: Seconds between re-checks (a full :meth:`~scheduler.backends.base.Preflight.preflight`)
#: of a backend that refused this replica for good (credentials, ACL, read-only database,
#: schema): slow and silent, so that an operator's fix is noticed without a restart while
#: the refusal is logged once, not at every attempt.
REFUSAL_RECHECK = 30.0
#: The ``reason`` label of a loss whose reason is not a :class:`LossReason` (a backend bug):
#: metric labels stay a bounded set; the log line and the event keep the reason as given.
OTHER_REASON = "other"


def loss_label(reason: str) -> str:
    """The metric label for a term that ended for ``reason``."""
    try:
        return LossReason(reason).value
    except ValueError:
        return OTHER_REASON


class Elector:
    """Runs the election for ``name`` in a background thread.

    Args:
        backend: the lease store (and presence, controls, preflight).
        name: election name (the cluster).
        holder: this replica's identity.
        timings: lease_ttl, renew_interval, renew_deadline (validated together).
        clock: monotonic time for every deadline, and every wait of the loop.
        metrics: the replica's metrics, where renewals and transitions are counted.
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
        *,
        metrics: Metrics,
        jobs: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.metrics = metrics
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
        self._holdoff_until = -math.inf
        self._on_resign: Callable[[Term], None] | None = None
        #: Seconds between re-checks while refused (default REFUSAL_RECHECK).
        self.refusal_recheck = REFUSAL_RECHECK
        replica = holder.replica_id
        self.health = BackendHealth(clock, replica)
        self.watchdog = StallWatchdog(clock, self._holds_term, self._wake.set, replica)
        #: This replica's presence record, refreshed by the loop.
        self.presence = Announcer(backend, name, holder, jobs, timings, clock, self.report)
        #: Operator controls (resign, pauses) as last read, refreshed by the loop.
        self.controls = LiveControls(backend, name, self.report, replica)

    # -- public API -------------------------------------------------------------------------

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener`` with :class:`TermStarted` / :class:`TermEnded` events.

        Listeners run on the elector thread and must not block; exceptions are logged.
        """
        self._listeners.append(listener)

    @property
    def backend_ok(self) -> bool:
        """True once a backend call succeeded and until one fails (readiness; claims wait
        for it after a failed call)."""
        return self.health.ok

    @backend_ok.setter
    def backend_ok(self, ok: bool) -> None:
        self.health.set_ok(ok)

    def on_backend_ok(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (it must not block) each time the backend answers again after a
        failed call (or answers for the first time)."""
        self.health.on_ok(callback)

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
        return self.watchdog.stall_reason()

    def on_resign_request(self, handler: Callable[[Term], None]) -> None:
        """Call ``handler(term)`` (once, on the elector thread; it must not block) when an
        operator asks this leader to step down (``baton resign``)."""
        self._on_resign = handler

    def is_leader(self) -> bool:
        return self.current_term() is not None

    @property
    def refusal(self) -> str | None:
        """Why the backend refuses this replica for good (credentials, ACL, read-only
        database, schema), or ``None``; ``/readyz`` reports it."""
        return self.health.refusal

    def health_problem(self) -> str | None:
        """Why this elector is not healthy (dead thread, wedged loop), or ``None``."""
        thread = self._thread
        return liveness_problem(
            thread is not None and thread.is_alive(),
            self.watchdog.silent_for(),
            self._term,
            self.timings,
            self.clock.monotonic(),
        )

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="baton-elector", daemon=True)
        self.watchdog.start(self._stop)
        self._thread.start()

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
            self._end_term(term, LossReason.SHUTDOWN, release=release)
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.timings.op_timeout * 3)

    def resign(self, holdoff: float | None = None) -> None:
        """Step down now (release) and go on as a follower, not competing for ``holdoff``
        seconds (default lease_ttl) so that another replica takes over."""
        term = self._term
        if term is not None:
            wait = self.timings.lease_ttl if holdoff is None else holdoff
            self._holdoff_until = self.clock.monotonic() + wait
            self._end_term(term, LossReason.RESIGNED, release=True)
            self._wake.set()

    def report(
        self, exc: BackendError | LeaseLost, term: Term | None = None, *, in_doubt: bool = False
    ) -> None:
        """Act on a backend error: a permanent one (:class:`BackendPermanentError`) ends
        leadership and stops this replica competing until a re-check passes.

        The refusal is logged once per cause at error level (``backend_refused``), not at
        every attempt, and re-checked every ``refusal_recheck`` seconds (a full preflight,
        silently). Transient errors are left to the loop's backoff. Called by the loop and
        by the runner (a claim refused for good); must not block beyond one release.

        Args:
            exc: the error. A :class:`LeaseLost` (the backend refused a call made under
                ``term``'s lease, an answer checked atomically on the server) ends ``term``
                now, as a watch would, instead of leading on until the next renewal.
            term: the term the failed call was made under (for ``LeaseLost``).
            in_doubt: the call may have landed unanswered (a claim, a start): the backend
                counts as unconfirmed (:attr:`backend_ok` false) until a call succeeds.
        """
        if isinstance(exc, LeaseLost):
            if term is not None:
                self._lost_by_backend(term, exc.reason)
            return
        if in_doubt:
            self.health.set_ok(False)
        if not isinstance(exc, BackendPermanentError):
            return
        self.health.refused(exc, self.refusal_recheck)
        term = self._term
        if term is not None:
            self._end_term(term, LossReason.BACKEND_REFUSED, release=True)
        self._wake.set()

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.health.refusal is not None:
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
            if self.presence.due():
                self.presence.announce()
            self.backend.wait_for_change(self.name, min(holdoff, self.timings.renew_interval))
            return
        try:
            lease = self.backend.try_acquire(self.name, self.holder, self.timings.lease_ttl)
            record = None if lease is not None else self.backend.read(self.name)
        except BackendPermanentError as exc:
            self.report(exc)
            return
        except BackendError as exc:
            self._sleep(self.health.unavailable(exc))
            return
        self.health.available()
        if lease is not None:
            # Nothing else before the term begins: a handover is measured in milliseconds.
            self._begin_term(lease)
            return
        if self.presence.due():
            # Followers keep presence and controls fresh too, so that a new leader already
            # knows which jobs are paused.
            self.presence.announce()
            self.controls.refresh()
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
        spare = lease.sent_at + self.timings.renew_deadline - self.clock.monotonic()
        if self.presence.never_announced() and spare > 2 * self.timings.op_timeout:
            # A replica that won the lease at start-up has not said who it is yet: say it now
            # (one bounded call, still leaving a whole renewal attempt before the deadline),
            # not a renew interval later: the status page and `baton status` would list a
            # leader without a presence record until then.
            self.presence.announce()
        self._sleep(next_renewal - self.clock.monotonic())
        if self._stop.is_set() or term.lost.is_set():
            if term.lost.is_set() and self._term is term:
                self._term = None
            return
        if self.clock.monotonic() >= term.leads_until():
            # We could not renew in time (or were paused past the deadline): stop trusting
            # the lease. Release it if it is still ours so a follower need not wait it out.
            self._end_term(term, LossReason.RENEW_DEADLINE, release=True)
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
            self.health.set_ok(False)
            self.metrics.lease_renewals.labels("error").inc()
            left = term.leads_until() - self.clock.monotonic()
            self.log.warning(
                "lease_renew_failed", error=str(exc), token=term.token, leads_for=round(left, 3)
            )
            # Retry soon, but leave room for another bounded attempt before the deadline.
            self._sleep(min(self.timings.renew_interval / 4, max(left, 0.0) / 2))
            return
        now = self.clock.monotonic()
        self.health.set_ok(True)
        self.metrics.lease_renewals.labels("ok").inc()
        self.metrics.lease_renew_latency.observe(now - sent)
        self.metrics.lease_time_left.set(renewed.deadline - now)
        if renewed.sent_at >= term.leads_until():
            # The request left after the deadline (the process stalled in between): the term
            # is over even though the server agreed; give the lease back.
            term.renewed(renewed)
            self._end_term(term, LossReason.RENEW_DEADLINE, release=True)
            return
        term.renewed(renewed)
        if self.watchdog.confirmed(renewed.sent_at):
            self.log.info("lease_revalidated", token=term.token)
        # Presence and controls ride along with the renewal, but only while two more bounded
        # calls still leave a whole renewal attempt before the renew deadline: the lease
        # comes first.
        spare = renewed.sent_at + self.timings.renew_deadline - self.clock.monotonic()
        if spare > 3 * self.timings.op_timeout and self.presence.due():
            self.presence.announce()
            self.controls.refresh()
        if self.controls.current.resign_requested(term.token) and self._on_resign is not None:
            self.log.info("resign_requested", token=term.token)
            self._on_resign(term)
            # The request names this term's token: clear it so a later term is not affected.
            self.controls.clear_resign()

    def _recheck(self) -> None:
        """While refused: wait ``refusal_recheck`` seconds, then run the preflight again."""
        term = self._term
        if term is not None:
            # Begun by an acquire that raced with a refusal reported by another thread.
            self._end_term(term, LossReason.BACKEND_REFUSED, release=True)
        if self.clock.wait(self._stop, self.refusal_recheck):
            return
        try:
            self.backend.preflight(self.name)
        except BackendPermanentError as exc:
            self.report(exc)  # logged again only if the cause changed
            return
        except BackendError:
            return  # no answer: nothing learnt, still refused
        self.health.refusal_cleared()

    def _sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on the clock, or less if woken (a stop, a loss, a stall)."""
        if seconds > 0:
            self.clock.wait(self._wake, seconds)
            self._wake.clear()

    # -- transitions ------------------------------------------------------------------------

    def _holds_term(self) -> bool:
        return self._term is not None

    def _begin_term(self, lease: Lease) -> None:
        self.watchdog.confirmed(lease.sent_at)  # a fresh acquisition is a validation
        term = Term(lease, self.timings, self.clock)
        self._term = term
        self.metrics.is_leader.set(1)
        self.metrics.leader_transitions.inc()
        self.metrics.lease_time_left.set(lease.deadline - self.clock.monotonic())
        self.log.info("leadership_acquired", token=lease.token, cluster=self.name)
        self._emit(TermStarted(term))
        # Backends that hear of a loss first (ZooKeeper watches) end the term at once.
        watch_lease(self.backend, lease, lambda reason: self._lost_by_backend(term, reason))

    def _lost_by_backend(self, term: Term, reason: str) -> None:
        self._end_term(term, reason, release=False)
        self._wake.set()

    def _end_term(self, term: Term, reason: str, release: bool) -> None:
        if not term.end(reason):
            return
        if self._term is term:
            self._term = None
        self.metrics.is_leader.set(0)
        self.metrics.leadership_lost.labels(loss_label(reason)).inc()
        self.log.warning("leadership_lost", reason=reason, token=term.token, cluster=self.name)
        self._emit(TermEnded(term, reason))
        if release:
            try:
                self.backend.release(term.lease)
                self.log.info("lease_released", token=term.token, cluster=self.name)
            except BackendError as exc:
                self.log.warning("lease_release_failed", error=str(exc), token=term.token)

    def _emit(self, event: TermEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                self.log.exception("listener_failed", listener=repr(listener))
