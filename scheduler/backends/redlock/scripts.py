"""The Lua scripts only Redlock needs: the two steps of an acquisition, and the give-back of a
lock that was never sealed. Every other step (renew, release, read, claims, starts,
outcomes, history, presence) is a script of the Redis backend
(:mod:`scheduler.backends.redis.scripts`), run unchanged on each primary: a primary of a
Redlock group keeps exactly the keys a single Redis primary keeps
(:mod:`scheduler.backends.redis.keys`).

An acquisition is two rounds over every primary (:mod:`.lease`):

1. ``LOCK_LUA``: ``SET NX PX`` of the lease key with the holder id, and what the primary
   knows: its token counter, whether it is the server it was at the last acquisition
   (``run_id``), its uptime and its clock;
2. ``SEAL_LUA``, on the primaries that granted the lock: the token chosen from the
   majority's counters written with set-if-greater, and the lease's info hash (the token
   the claim scripts check), only while the lock is still ours there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from redis.commands.core import Script

from scheduler.backends.redis.scripts import ScriptSet

# KEYS[1] lease key, KEYS[2] info hash, KEYS[3] token counter, KEYS[4] server key (the
# run_id of the server at the last sealed acquisition)
# ARGV[1] holder id, ARGV[2] TTL in ms
# returns {granted (1 or 0), counter, state, uptime in ms, server time in µs, holder's
# token}: granted 1 when the lock was free here and is ours now; counter the token counter
# as stored ('0' when absent); holder's token the token of whoever else holds the lock
# ('0' when granted, or unsealed); state what this primary remembers:
#   'same'    the server of the last sealed acquisition (no restart since)
#   'changed' another server process (a restart, with persistence: the counter survived,
#             perhaps without its last second) or a counter without a server key
#   'fresh'   nothing: no counter, no server key (a new election name, or a restart
#             without persistence)
# Without INFO (denied, renamed) restarts cannot be seen: 'same', or 'fresh' with no
# counter, and the uptime is reported as very large.
LOCK_LUA = """
local counter = redis.call('GET', KEYS[3]) or '0'
local ok, info = pcall(redis.call, 'INFO', 'server')
local served = ok and string.match(info, 'run_id:(%x+)') or nil
local uptime = ok and tonumber(string.match(info, 'uptime_in_seconds:(%d+)')) or nil
local known = redis.call('GET', KEYS[4])
local state = 'same'
if not served then
    if counter == '0' then state = 'fresh' end
    uptime = nil
elseif not known then
    if counter == '0' then state = 'fresh' else state = 'changed' end
elseif known ~= served then
    state = 'changed'
end
local uptime_ms = uptime and string.format('%.0f', uptime * 1000) or '999999999999'
local now = redis.call('TIME')
local now_us = now[1] .. string.format('%06d', tonumber(now[2]))
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {0, counter, state, uptime_ms, now_us, redis.call('HGET', KEYS[2], 'token') or '0'}
end
redis.call('DEL', KEYS[2])
return {1, counter, state, uptime_ms, now_us, '0'}
"""

# KEYS[1] lease key, KEYS[2] info hash, KEYS[3] token counter, KEYS[4] claim epoch
# ("low:high", as in the Redis backend's ACQUIRE_LUA), KEYS[5] server key
# ARGV[1] holder id, ARGV[2] the token, ARGV[3] replica id, ARGV[4] host, ARGV[5] since
# (ISO wall time), ARGV[6] epoch: 'lost' (this primary may have lost claims: every fire up
# to its clock + allowance counts as maybe claimed here), 'fresh' (a new election: fires
# within the allowance of now), '' (none), ARGV[7] claim allowance in ms, ARGV[8] '1' on a
# primary that granted the lock, '0' on one that did not
# returns 1 when sealed (the lock is still ours, the counter is at least the token, the
# info hash carries it), 0 when the lock is not ours here (any more)
# On a primary that did not grant the lock ('0') only the counter, the epoch and the server
# key are written: every primary that answered then remembers the election (a primary
# that never won a lock is not taken for one that lost its data) and knows the token.
# The counter only ever grows (set-if-greater): a seal that arrives late never lowers it.
SEAL_LUA = """
local ours = ARGV[8] == '1' and redis.call('GET', KEYS[1]) == ARGV[1]
if ARGV[8] == '1' and not ours then return 0 end
local stored = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
if tonumber(ARGV[2]) > stored then redis.call('SET', KEYS[3], ARGV[2]) end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local allowance = tonumber(ARGV[7])
if ARGV[6] == 'lost' then
    redis.call('SET', KEYS[4], '0:' .. string.format('%.0f', now_ms + allowance))
elseif ARGV[6] == 'fresh' and not redis.call('GET', KEYS[4]) then
    redis.call('SET', KEYS[4], string.format('%.0f', now_ms - allowance) .. ':' ..
               string.format('%.0f', now_ms + allowance))
end
local ok, info = pcall(redis.call, 'INFO', 'server')
local served = ok and string.match(info, 'run_id:(%x+)') or nil
if served then redis.call('SET', KEYS[5], served) end
if not ours then return 0 end
redis.call('HSET', KEYS[2], 'token', ARGV[2], 'replica', ARGV[3], 'host', ARGV[4],
           'since', ARGV[5])
redis.call('PEXPIRE', KEYS[2], math.max(1, redis.call('PTTL', KEYS[1])))
return 1
"""

# KEYS[1] lease key, KEYS[2] info hash
# ARGV[1] holder id, ARGV[2] events channel, ARGV[3] the failed acquisition's token ('' when
# it chose none)
# returns 1 when the lock was ours and is deleted, 0 otherwise
# Gives back a lock whose acquisition failed (no majority, too few voters, its seal did not
# reach a majority, its validity ran out): owner-checked by the holder id, and by the token
# when sealed. A lock sealed with another token is a later acquisition of the same holder
# (a replica keeps its holder id), which a give-back that arrives late must not delete.
UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local sealed = redis.call('HGET', KEYS[2], 'token')
if sealed and sealed ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[2], 'released')
return 1
"""


@dataclass(frozen=True, slots=True)
class LockScripts(ScriptSet):
    """The Redlock scripts, registered with one primary's client (see
    :meth:`~scheduler.backends.redis.scripts.ScriptSet.register`)."""

    SOURCES: ClassVar[dict[str, str]] = {"lock": LOCK_LUA, "seal": SEAL_LUA, "unlock": UNLOCK_LUA}

    lock: Script
    seal: Script
    unlock: Script


__all__ = ["LOCK_LUA", "SEAL_LUA", "UNLOCK_LUA", "LockScripts"]
