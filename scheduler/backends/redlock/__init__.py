"""The Redlock backend: a quorum of independent Redis primaries, with fencing tokens.

``redlock://[[user]:password@]h1:p1,h2:p2,h3:p3[/db]`` (``rediss+redlock://`` over TLS) names
3 or 5 Redis primaries that know nothing of each other: no replication, no Sentinel, no
Cluster. Every primary keeps the keys one Redis primary keeps for the Redis backend
(:mod:`scheduler.backends.redis.keys`) and runs its scripts unchanged; this package fans
each step out to every primary at once (a bounded pool, :mod:`.quorum`) and counts a
majority, ⌊N/2⌋ + 1:

* :mod:`.lease`: Redlock's acquisition (a lock on a majority within the validity, TTL -
  elapsed - drift, drift = 1 % of the TTL + 2 ms), renewal and release on every primary
  with owner-checked scripts, and the fencing token; :mod:`.scripts`: the two scripts an
  acquisition adds (``LOCK_LUA``, ``SEAL_LUA``) and ``UNLOCK_LUA``;
* :mod:`.ledger`: claims and starts need a majority; lookups read a majority;
* :mod:`.presence`, :mod:`.controls`: written to all, read from a majority and merged;
* :mod:`.url`, :mod:`.primaries`, :mod:`.backend`.

**Why the token strictly increases.** A lease is handed out with token ``T`` only after
``SEAL_LUA`` wrote ``counter := max(counter, T)`` on a majority ``W`` of primaries, each of
them *while it still held that lease's lock* (the script checks the holder id first and
writes nothing otherwise). The next acquisition that wins wins a majority ``M`` of locks,
and ``M`` and ``W`` share a primary ``p`` (two majorities of an odd ``N`` intersect).
``LOCK_LUA`` on ``p`` succeeded only once the previous lock on ``p`` was gone (``SET NX``),
that is after the seal on ``p``, so the counter it read on ``p`` is at least ``T``, and the
new token, above the highest counter read on ``M``, exceeds ``T``. Seals only raise a
counter, so later, slower seals of a failed acquisition change nothing. This needs no
bound on pauses or clock drift: only that ``p`` did not lose what it had stored.

Assumptions, and what Baton does where they fail:

* **A primary keeps what it acknowledged.** Run with ``appendonly yes`` and ``appendfsync
  always``, or keep a primary that restarted without its data **down for longer than the
  TTL** (antirez's "delayed restarts"): otherwise it may come back without a lock someone
  holds (two leaders) and without the last token or a claim (a token or a tick repeated,
  if it is the one primary two majorities share). Baton **detects** both restarts: the
  lock script compares the server's ``run_id`` with the one the last seal stored, and a
  primary without any of the election's keys while others have them lost its data. Such a
  primary does **not vote** in an acquisition until it has been up for longer than the
  TTL (the delayed restart, enforced rather than assumed: any lock it lost has expired by
  then); with fewer than a majority of voters the acquisition is **refused**
  (``BackendUnavailable`` naming the primaries). A seal on a restarted primary also opens a
  claim epoch there (as the Redis backend does after a data loss): every fire up to its
  clock + 1 s counts as maybe claimed on it, so a claim it lost is never claimed again
  through it; and its lost counter is covered by the other primaries of the majority, the
  floor and the µs clock (below).
* **Undetectable:** a majority losing its data at once (all of it looks like a new
  election); then tokens rest on the floor (the highest token this process saw) and the
  primaries' µs clocks, exactly as on one Redis primary, and claims on the epoch.
* **Mutual exclusion of leaders** (two replicas each believing they lead) rests on
  Redlock's timing assumptions: bounded process pauses and clock *rates* (not offsets)
  that differ by less than the drift allowance over a TTL. Baton does not depend on it for
  its own writes: every claim and start is checked on each primary against the lease's
  holder *and token*, and needs a majority, so a deposed leader whose validity ran out
  during a pause cannot claim or start anything (two majorities intersect on the claim's
  record too). A job's *own* side effects are protected by the fencing token (fenced
  sinks), which is Kleppmann's requirement.
"""

from __future__ import annotations

from scheduler.backends.redlock.backend import RedlockBackend
from scheduler.backends.redlock.lease import NODE_TIMEOUT_SHARE, node_timeout
from scheduler.backends.redlock.scripts import LOCK_LUA, SEAL_LUA, UNLOCK_LUA
from scheduler.backends.redlock.url import PRIMARY_COUNTS, SCHEMES, RedlockTarget, parse_url

__all__ = [
    "LOCK_LUA",
    "NODE_TIMEOUT_SHARE",
    "PRIMARY_COUNTS",
    "SCHEMES",
    "SEAL_LUA",
    "UNLOCK_LUA",
    "RedlockBackend",
    "RedlockTarget",
    "node_timeout",
    "parse_url",
]
