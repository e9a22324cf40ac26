"""The attempt ledger: at most one claim attempt per fire per leadership term.

The rule it keeps, and why (chaos finding F11), is told in :mod:`scheduler.firing.claims`,
its only user: whatever proposes a fire again in the term that already attempted it is
dropped, and an attempt whose job this replica started is never started again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from scheduler.backends.runs import fire_key

__all__ = ["ATTEMPT_MEMORY", "Attempts"]

Key = tuple[str, int]

#: Seconds an attempt is remembered beyond twice the longest misfire_grace: room for wall
#: clock steps (a proposal that comes back after a step is still recognised).
ATTEMPT_MEMORY = 300.0


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
