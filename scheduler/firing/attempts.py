"""The attempt ledger: at most one claim attempt per fire per leadership term.

The rule it keeps, and why (chaos finding F11), is told in :mod:`scheduler.firing.claims`,
its only user: whatever proposes a fire again in the term that already attempted it is
dropped, and a fire whose job this replica started is never started again (under any
attempt).
"""

from __future__ import annotations

import math
import threading
from array import array
from bisect import bisect_left
from datetime import datetime

from scheduler.backends.runs import fire_key

__all__ = ["ATTEMPT_MEMORY", "Attempts"]

#: Seconds an attempt is remembered beyond twice the longest misfire_grace: room for wall
#: clock steps (a proposal that comes back after a step is still recognised).
ATTEMPT_MEMORY = 300.0


class FireKeys:
    """Fire keys per job, each job's sorted in one ``array`` of 8-byte integers.

    A key is forgotten once the job has one ``keep`` seconds newer (fire time, not the
    clock: a wall-clock step forgets nothing). Why arrays: with 10,000 jobs every 10 s and
    a 7-minute memory a dict entry per fire held ~3 MiB per burst, ~130 MiB in all; this
    holds 8 bytes per fire.
    """

    def __init__(self, keep: float) -> None:
        # Fire keys are milliseconds; an unbounded grace keeps everything (None).
        self._keep = round(keep * 1000) if math.isfinite(keep) else None
        self._jobs: dict[str, array[int]] = {}

    def add(self, job: str, key: int) -> bool:
        """Remember ``key`` of ``job``; ``False`` if it was remembered already."""
        keys = self._jobs.get(job)
        if keys is None:
            keys = self._jobs[job] = array("q")
        index = bisect_left(keys, key)
        if index < len(keys) and keys[index] == key:
            return False
        keys.insert(index, key)
        if self._keep is not None:
            old = bisect_left(keys, keys[-1] - self._keep)
            if old:
                del keys[:old]
        return True

    def has(self, job: str, key: int) -> bool:
        keys = self._jobs.get(job)
        if keys is None:
            return False
        index = bisect_left(keys, key)
        return index < len(keys) and keys[index] == key

    def __len__(self) -> int:
        return sum(len(keys) for keys in self._jobs.values())


class Attempts:
    """The fires this replica has attempted in its current term, and those it started.

    Thread-safe (lanes of different jobs call it concurrently). Attempts are forgotten when
    the term changes and, within a long term, once the job has an attempt ``keep`` seconds
    (of fire time) newer: by then the fire is far past its ``misfire_grace`` and no path
    proposes it.

    Args:
        keep: seconds of fire time an entry is kept; at least the longest
            ``misfire_grace`` plus the longest wall-clock step the deployment should
            tolerate.
    """

    def __init__(self, keep: float) -> None:
        self._keep = keep
        self._lock = threading.Lock()
        self._token: int | None = None
        self._made = FireKeys(keep)  # this term's attempts
        # Fires whose job this replica started, across terms: the last guard against
        # running one twice (a resend or an adoption that raced the first run).
        self._started = FireKeys(keep)

    def first(self, token: int, job: str, fire: datetime) -> bool:
        """Record an attempt at (``job``, ``fire``) in term ``token``.

        Returns:
            ``True`` if this is the term's first attempt at the fire (send the claim);
            ``False`` if the term attempted it already (drop the proposal).
        """
        key = fire_key(fire)
        with self._lock:
            if token != self._token:
                self._token, self._made = token, FireKeys(self._keep)
            return self._made.add(job, key)

    def start(self, job: str, fire: datetime) -> bool:
        """Record that this replica is starting the job of (``job``, ``fire``).

        Returns:
            ``True`` the first time; ``False`` if this replica started it already.
        """
        key = fire_key(fire)
        with self._lock:
            return self._started.add(job, key)

    def started(self, job: str, fire: datetime) -> bool:
        """Whether this replica started the job of (``job``, ``fire``)."""
        key = fire_key(fire)
        with self._lock:
            return self._started.has(job, key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._made)
