"""Rules every backend keeps, written once: which history a claim trims, and what a lease
grant is worth. Pure functions, no I/O: the contract suite checks each backend against them.

**Trimming.** A claim of a job's fire also trims that job's history, in the same atomic
step. The rule, for the job's records *with the new claim stored*:

1. the window is the ``len(records) - retention.limit`` oldest records (at most ``scan``)
   among those fired strictly before ``cutoff = claimed fire - retention.protect``: a new
   leader looks back ``protect`` seconds for unclaimed fires, so those must stay;
2. of the window, only finished records (``ok``/``error``/``lost``) are deleted: a claimed
   or running one stays, or its fire would look free. It still occupies its place in the
   window, so the window does not reach further to make up for it.

:func:`select_trim` is the whole rule on an in-memory history; a backend that pushes the
work to its server follows it in two steps: :func:`trim_window` (how many candidates, below
which fire key), then :func:`trimmable` on each candidate it reads. Redis runs the same
steps in Lua (``CLAIM_LUA`` in :mod:`scheduler.backends.redis.scripts`); the contract suite
compares every backend's history with :func:`select_trim` after each claim.

**Lease grants.** A TTL is checked the same way everywhere (:func:`check_ttl`), and a lease
is worth the same everywhere once granted (:func:`granted`: its local deadline counts from
when the request was *sent*, see :func:`~scheduler.leadership.lease.local_deadline`). A
backend that stores an expiry on a clock its clients share decides whether it passed with
:func:`grant_expired`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from scheduler.backends.runs import OUTCOMES, UNFINISHED, Outcome, Retention
from scheduler.errors import ConfigError
from scheduler.leadership.lease import Holder, Lease, local_deadline

#: The outcomes trimming may delete: those of a fire that has ended.
FINISHED: tuple[Outcome, ...] = tuple(outcome for outcome in OUTCOMES if outcome not in UNFINISHED)

#: The most trim candidates one claim looks at, so that one claim's work stays bounded when
#: the limit was lowered a long way (the backlog goes over the following claims). Also the
#: size of one ZooKeeper transaction's deletes.
TRIM_SCAN = 1000

#: The shortest lease TTL, in seconds: servers count TTLs in milliseconds.
MIN_TTL = 0.001

_Item = TypeVar("_Item")


@dataclass(frozen=True, slots=True)
class TrimWindow:
    """The records one claim may trim.

    Attributes:
        count: how many of the job's oldest records fired before ``cutoff`` are candidates
            (0: trim nothing).
        cutoff: a fire key (see :func:`~scheduler.backends.runs.fire_key`); only records fired
            strictly before it are candidates.
    """

    count: int
    cutoff: int


def trim_window(
    records: int, claimed_key: int, retention: Retention, scan: int | None = TRIM_SCAN
) -> TrimWindow:
    """Where the claim of the fire ``claimed_key`` may trim (step 1 of the rule).

    Args:
        records: how many records the job has, the new claim's included.
        claimed_key: the fire key being claimed.
        retention: the job's retention.
        scan: the most candidates to look at (:data:`TRIM_SCAN`); ``None`` for no bound.

    Returns:
        The window: its size and cutoff.
    """
    excess = records - max(retention.limit, 0)
    if scan is not None:
        excess = min(excess, scan)
    return TrimWindow(max(excess, 0), claimed_key - round(retention.protect * 1000))


def trimmable(outcome: str | None) -> bool:
    """Whether a candidate whose stored outcome is ``outcome`` may be deleted (step 2).

    Args:
        outcome: the record's outcome; ``None`` when it cannot be read (kept, to be safe).
    """
    return outcome in FINISHED


def select_trim(
    records: Mapping[int, str | None],
    claimed_key: int,
    retention: Retention,
    scan: int | None = TRIM_SCAN,
) -> list[int]:
    """The fire keys the claim of ``claimed_key`` deletes from a job's history: the rule.

    Args:
        records: the job's records as fire key -> outcome (``None``: unreadable); the new
            claim's key is counted whether or not it is in the mapping.
        claimed_key: the fire key being claimed (never trimmed by its own claim).
        retention: the job's retention.
        scan: as for :func:`trim_window`.

    Returns:
        The fire keys to delete, oldest first.
    """
    count = len(records) + (claimed_key not in records)
    window = trim_window(count, claimed_key, retention, scan)
    candidates = sorted(key for key in records if key < window.cutoff)[: window.count]
    return [key for key in candidates if trimmable(records[key])]


def chunks(
    items: Sequence[_Item],
    most: int,
    weigh: Callable[[_Item], int] | None = None,
    budget: int | None = None,
) -> Iterator[Sequence[_Item]]:
    """Split ``items``, in order, into the consecutive chunks a backend sends one at a time.

    How a batch stays within what one request may carry (ZooKeeper's ``jute.maxbuffer``)
    and within what one server-side step may hold up (a Redis script blocks the server, a
    SQLite transaction holds the write lock): each chunk is one round trip or transaction,
    and the lease renewal can go between two.

    Args:
        items: the batch.
        most: the most items per chunk (at least 1).
        weigh: an item's size (bytes, commands); without it only ``most`` bounds a chunk.
        budget: the most total weight per chunk; an item heavier than the budget is sent
            in a chunk of its own.

    Returns:
        The chunks, none empty; none at all for an empty batch.
    """
    most = max(1, most)
    start, weight = 0, 0
    for index, item in enumerate(items):
        size = weigh(item) if weigh is not None else 0
        full = index - start >= most or (
            budget is not None and index > start and weight + size > budget
        )
        if full:
            yield items[start:index]
            start, weight = index, 0
        weight += size
    if start < len(items):
        yield items[start:]


def check_ttl(ttl: float) -> float:
    """``ttl`` if it is a usable lease TTL in seconds.

    Raises:
        ValueError: ``ttl`` is not a finite number of at least :data:`MIN_TTL` seconds.
    """
    if not (math.isfinite(ttl) and ttl >= MIN_TTL):
        raise ValueError(f"lease ttl must be at least {MIN_TTL:g} s, got {ttl!r}")
    return ttl


def check_op_timeout(op_timeout: float) -> float:
    """``op_timeout`` (seconds one backend call may take) if it is positive.

    Raises:
        ConfigError: it is not (key ``backend``).
    """
    if op_timeout <= 0:
        raise ConfigError("backend", f"op_timeout must be positive, got {op_timeout!r}")
    return op_timeout


def ttl_ms(ttl: float) -> int:
    """``ttl`` seconds in whole milliseconds, as servers take it (at least 1).

    Raises:
        ValueError: as :func:`check_ttl`.
    """
    return max(1, round(check_ttl(ttl) * 1000))


def granted(
    name: str, holder: Holder, token: int, ttl: float, sent_at: float, handle: str = ""
) -> Lease:
    """The lease a backend granted to a request sent at monotonic ``sent_at``.

    Its deadline counts from the send time, less the drift margin, so it ends before the
    server can expire the grant (:func:`~scheduler.leadership.lease.local_deadline`).
    """
    return Lease(
        name=name,
        holder=holder,
        token=token,
        ttl=ttl,
        sent_at=sent_at,
        deadline=local_deadline(sent_at, ttl),
        handle=handle,
    )


def grant_expired(expires_at: float, ttl: float, now: float) -> bool:
    """Whether a grant stored to expire at ``expires_at`` has expired at ``now``.

    Both readings come from one clock the clients share (SQLite: the host's monotonic
    clock). An expiry further ahead than the grant's own TTL cannot come from that clock as
    it runs now (it restarted since, at a reboot): it counts as expired too.
    """
    if expires_at <= now:
        return True
    return expires_at - now > ttl + 1e-6


__all__ = [
    "FINISHED",
    "MIN_TTL",
    "TRIM_SCAN",
    "TrimWindow",
    "check_ttl",
    "chunks",
    "grant_expired",
    "granted",
    "select_trim",
    "trim_window",
    "trimmable",
]
