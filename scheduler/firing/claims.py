"""A fire's claim: one attempt per fire per term, and why a started fire never looks free.

**The rule.** In one leadership term a replica makes at most one claim *attempt* per fire
(job, instant); whatever proposes the fire again in that term — APScheduler's trigger, the
catch-up after an election or an outage, a lane's backlog, :mod:`scheduler.firing.recovery` — is
dropped (``fire_already_attempted``). The only repeat is a *resend* of the same attempt
(same :attr:`~scheduler.firing.runs.RunRecord.attempt`) by recovery after the first send went
unanswered, which every backend answers idempotently. :class:`Attempts` is that ledger.

**One clock proposes fires.** The trigger and the catch-up both name instants on this
replica's wall clock (:meth:`Clock.now`, APScheduler reads the same system clock): the
backend's clock is not read per proposal, because SQLite has none, ZooKeeper exposes none,
and a read per fire would add a round trip to every tick. The two paths still see that clock
at different moments — APScheduler computes its wait before a clock step and wakes after
it, the catch-up plans from the stepped clock — so a stepped clock can make both propose the
same instant. The ledger makes that harmless: the second proposal is dropped locally, and
were it ever sent, it is a different attempt that neither claims nor gives back the first's
record. (Chaos finding F11: a replica whose clock was 5 s behind ran tick t from its
catch-up, then its trigger claimed t again in the same term; that claim went unanswered and,
once settled, was withdrawn by token — deleting the record of the run that had happened.)

**Invariants: no path makes a started fire look unclaimed, or a claimed one look free.**

* *Claim identity* — ``start``, ``finish`` and ``unclaim`` act only on the record of their
  own attempt (see :mod:`scheduler.backends.base`).
* *Give-back* (``unclaim``: an answer that came too late, ``fire_abandoned``, a confirmed
  claim whose term ended, shutdown) deletes only a ``claimed`` record of its attempt, in one
  atomic step; a fire whose ``start`` landed can never be given back, whatever the claimant
  believes.
* *Start* is fenced by the lease: a ``claimed`` record of a term that is over can never
  start, so a new leader may rely on it staying unstarted (it watches such claims, and runs
  the fire if the claimant gives it back, see :mod:`scheduler.firing.recovery`).
* *Adoption by a new leader* — a ``running`` record of an older term is marked ``lost``,
  never run again; a ``claimed`` one stays claimed until its claimant gives it back or
  misfire_grace passes (then it is marked ``lost``). Neither is deleted by the new leader.
* *History trimming* deletes only finished records (``ok``/``error``/``lost``), beyond the
  retention limit and older than twice ``misfire_grace`` before the fire being claimed, which
  is further back than any catch-up looks.
* *The data-loss epoch* (Redis) refuses, after a loss of data, every fire that could have
  been claimed in the lost data (fires up to the loss plus the claim allowance): a fire
  whose record was lost is never claimed again. Its limit, documented in
  :mod:`scheduler.backends.redis`, is a data loss with no surviving replica that saw the
  last token and a server clock stepped back.
* *Shutdown* gives back only claims in doubt or adopted and never started; a running job's
  record is finished ``lost``, not deleted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from scheduler.firing.runs import fire_key

Key = tuple[str, int]


class Attempts:
    """The fires this replica has attempted in its current term.

    Thread-safe (lanes of different jobs call it concurrently). Entries are forgotten when
    the term changes and, within a long term, ``keep`` seconds (monotonic) after they were
    made: by then the fire is far past its ``misfire_grace`` and no path proposes it.

    Args:
        monotonic: the clock entries age on.
        keep: seconds an entry is kept; at least the longest ``misfire_grace`` plus the
            longest wall-clock step the deployment should tolerate.
    """

    def __init__(self, monotonic: Callable[[], float], keep: float) -> None:
        self._monotonic = monotonic
        self._keep = keep
        self._lock = threading.Lock()
        self._token: int | None = None
        self._made: dict[Key, float] = {}  # fire -> monotonic time of the term's attempt
        # Attempts whose job this replica started, across terms: the last guard against
        # running one twice (a resend or an adoption that raced the first run).
        self._started: dict[str, float] = {}
        self._next_prune = 0.0

    def first(self, token: int, job: str, fire: datetime) -> bool:
        """Record an attempt at (``job``, ``fire``) in term ``token``.

        Returns:
            ``True`` if this is the term's first attempt at the fire (send the claim);
            ``False`` if the term attempted it already (drop the proposal).
        """
        key = (job, fire_key(fire))
        now = self._monotonic()
        with self._lock:
            self._prune(now)
            if token != self._token:
                self._token, self._made = token, {}
            if key in self._made:
                return False
            self._made[key] = now
            return True

    def start(self, attempt: str) -> bool:
        """Record that the job of ``attempt`` is being started.

        Returns:
            ``True`` the first time; ``False`` if this replica started it already.
        """
        now = self._monotonic()
        with self._lock:
            self._prune(now)
            if attempt in self._started:
                return False
            self._started[attempt] = now
            return True

    def started(self, attempt: str) -> bool:
        """Whether this replica started the job of ``attempt``."""
        with self._lock:
            return attempt in self._started

    def _prune(self, now: float) -> None:
        if now < self._next_prune:
            return
        self._made = {k: t for k, t in self._made.items() if now - t < self._keep}
        self._started = {a: t for a, t in self._started.items() if now - t < self._keep}
        self._next_prune = now + self._keep / 4

    def __len__(self) -> int:
        with self._lock:
            return len(self._made)
