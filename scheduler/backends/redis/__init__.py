"""The Redis backend: one key per lease, Lua scripts for every compare-and-act.

One role a module, behind the façade :class:`RedisBackend` (:mod:`.backend`):

* :mod:`.scripts`: every Lua script with its ``KEYS``/``ARGV``/returns header, and why
  fencing tokens survive a data loss; :mod:`.keys`: the key layout;
* :mod:`.lease`: the lease store; :mod:`.ledger`: run records and trimming;
  :mod:`.presence`, :mod:`.controls`, :mod:`.preflight`;
* :mod:`.url`: the ``redis://``/``rediss://`` URL and the bounded, non-retrying client;
  :mod:`.errors`: redis-py's exceptions as Baton's.
"""

from __future__ import annotations

from scheduler.backends.redis.backend import RedisBackend
from scheduler.backends.redis.scripts import (
    ACQUIRE_LUA,
    ANNOUNCE_LUA,
    CLAIM_ALLOWANCE,
    CLAIM_LUA,
    FINISH_LUA,
    HISTORY_LUA,
    MEMBERS_LUA,
    READ_LUA,
    RELEASE_LUA,
    RELEASED,
    RENEW_LUA,
    START_LUA,
    UNCLAIM_LUA,
)
from scheduler.backends.redis.url import DEFAULT_PORT, MAX_DB, RedisTarget, parse_url
from scheduler.backends.rules import TRIM_SCAN

__all__ = [
    "ACQUIRE_LUA",
    "ANNOUNCE_LUA",
    "CLAIM_ALLOWANCE",
    "CLAIM_LUA",
    "DEFAULT_PORT",
    "FINISH_LUA",
    "HISTORY_LUA",
    "MAX_DB",
    "MEMBERS_LUA",
    "READ_LUA",
    "RELEASED",
    "RELEASE_LUA",
    "RENEW_LUA",
    "START_LUA",
    "TRIM_SCAN",
    "UNCLAIM_LUA",
    "RedisBackend",
    "RedisTarget",
    "parse_url",
]
