"""The Lua scripts of the Redis backend, one per compare-and-act, each headed by its
``KEYS`` / ``ARGV`` / returns comment (redis-py ``redis/lock.py`` style), and their registration.

Fencing tokens. A token must exceed every token issued before for ``N``, even after a Redis
restart that lost all data (``kill -9`` without AOF wipes ``baton:{N}:token``). The acquire
script therefore issues::

    token = max(stored_counter + 1, floor + 1, server_time_in_microseconds)

* ``stored_counter + 1`` is the ordinary case and survives a Redis host clock stepping back.
* ``floor`` is the highest token this process has observed for ``N`` (from acquire, read,
  claim, finish and history), so a replica that saw the last token carries the sequence
  across data loss on its own.
* The server's ``TIME`` in microseconds covers data loss when no live replica saw the last
  token: a token issued earlier was at most the microsecond clock of its own moment (or a
  successor of a token that was), so a later reading of a clock that did not step back is
  larger. Only data loss *and* a clock stepped back *and* no surviving observer together
  break it.

Tokens are about 1.8e15, exact in Lua's doubles (below 2^53) and written with
``string.format('%.0f', ...)``: ``tostring`` would give ``1.8e+15``.

Run records. Every script that acts on a claim (start, finish, unclaim, a resent claim)
decodes the stored JSON with cjson and compares its ``attempt`` (and its ``outcome`` where
the state matters) in the same script that writes, so the check and the act are one atomic
step. Scripts never re-encode a decoded record: cjson would print large tokens as floats.
Claim's trimming is the rule of :mod:`scheduler.backends.rules` in Lua: the window of
:func:`~scheduler.backends.rules.trim_window` (at most
:data:`~scheduler.backends.rules.TRIM_SCAN` candidates per claim, so one claim's work stays
bounded even when the limit was lowered a long way: the backlog then goes over the
following claims), of which only finished records are deleted
(:func:`~scheduler.backends.rules.trimmable`); an index entry whose record is missing is
deleted too (there is nothing to keep). The contract suite checks the result against
:func:`~scheduler.backends.rules.select_trim`.

Scripts go through ``register_script`` (EVALSHA with a NOSCRIPT fallback), so a restarted,
empty Redis needs no special handling.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis as redis_lib
from redis.commands.core import Script

# KEYS[1] lease key, KEYS[2] info hash, KEYS[3] token counter
# ARGV[1] holder id, ARGV[2] TTL in ms, ARGV[3] floor (highest token the caller has seen),
# ARGV[4] replica id, ARGV[5] host, ARGV[6] since (ISO wall time)
# KEYS[4] claim epoch "low:high": fires in [low, high) may have been claimed in lost data
# ARGV[7] claim allowance in ms (how far ahead of the server clock a fire may be claimed)
# returns {1, new token} when acquired; {0, current holder's token or '0'} when held
ACQUIRE_LUA = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
    return {0, redis.call('HGET', KEYS[2], 'token') or '0'}
end
local stored = tonumber(redis.call('GET', KEYS[3]) or '0') or 0
local floor = tonumber(ARGV[3]) or 0
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local now_ms = math.floor(now_us / 1000)
local allowance = tonumber(ARGV[7])
if stored < floor then
    -- The caller saw a token this store no longer knows: it lost data (a restart without
    -- persistence, a rollback to an old snapshot), and with it any claim of a fire up to
    -- now + allowance.
    redis.call('SET', KEYS[4], '0:' .. string.format('%.0f', now_ms + allowance))
elseif stored == 0 and not redis.call('GET', KEYS[4]) then
    -- Looks fresh, but may have lost data no caller here saw: claims made early (up to the
    -- allowance ahead) just before such a loss are the ones a new leader could repeat.
    redis.call('SET', KEYS[4], string.format('%.0f', now_ms - allowance) .. ':' ..
               string.format('%.0f', now_ms + allowance))
end
local token = string.format('%.0f', math.max(stored + 1, floor + 1, now_us))
redis.call('SET', KEYS[3], token)
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'token', token, 'replica', ARGV[4], 'host', ARGV[5],
           'since', ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {1, token}
"""

# KEYS[1] lease key, KEYS[2] info hash
# ARGV[1] holder id, ARGV[2] token, ARGV[3] TTL in ms
# returns 'ok' when extended, else why not: 'expired', 'not-holder' or 'stale-token'
RENEW_LUA = """
local holder = redis.call('GET', KEYS[1])
if not holder then return 'expired' end
if holder ~= ARGV[1] then return 'not-holder' end
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return 'stale-token' end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 'ok'
"""

# KEYS[1] lease key, KEYS[2] info hash
# ARGV[1] holder id, ARGV[2] token, ARGV[3] events channel
# returns 1 when released, 0 when the lease was not ours (already gone or taken over)
RELEASE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('PUBLISH', ARGV[3], 'released')
return 1
"""

# KEYS[1] lease key, KEYS[2] info hash
# returns false when free, else {replica, host, token, since, PTTL in ms (-1: no expiry)}
READ_LUA = """
local pttl = redis.call('PTTL', KEYS[1])
if pttl == -2 then return false end
local info = redis.call('HMGET', KEYS[2], 'replica', 'host', 'token', 'since')
return {info[1] or '', info[2] or '', info[3] or '0', info[4] or '', pttl}
"""

# KEYS[1] lease key, KEYS[2] info hash, KEYS[3] runs hash, KEYS[4] run index zset
# ARGV[1] holder id, ARGV[2] token, ARGV[3] fire key, ARGV[4] run record JSON,
# ARGV[5] retention limit, ARGV[6] trim cutoff: only fire keys below it may be trimmed
# KEYS[5] claim epoch ("low:high", see ACQUIRE_LUA); ARGV[7] claim allowance in ms
# ARGV[8] claim attempt id ('' for none: matches no record), ARGV[9] most trim candidates
# to look at
# returns {'lost', reason} | {'early', ms to wait} | {'resent', stored record JSON} (the
# fire's record is this attempt's own) | {'duplicate', ''} (another attempt's record, or a
# fire in the epoch: it may have been claimed in lost data) | {'claimed', records trimmed}
# Trimming follows scheduler.backends.rules: the window is trim_window (its count capped at
# ARGV[9], its cutoff ARGV[6]), and of it only trimmable (finished) records are deleted.
CLAIM_LUA = """
local holder = redis.call('GET', KEYS[1])
if not holder then return {'lost', 'expired'} end
if holder ~= ARGV[1] then return {'lost', 'not-holder'} end
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return {'lost', 'stale-token'} end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local fire = tonumber(ARGV[3])
if fire > now_ms + tonumber(ARGV[7]) then
    return {'early', string.format('%.0f', fire - now_ms - tonumber(ARGV[7]))}
end
-- The stored record first: a resend must find its own record even for a fire in the epoch.
local current = redis.call('HGET', KEYS[3], ARGV[3])
if current then
    local ok, record = pcall(cjson.decode, current)
    if ARGV[8] ~= '' and ok and type(record) == 'table' and record['attempt'] == ARGV[8] then
        return {'resent', current}
    end
    return {'duplicate', ''}
end
local epoch = redis.call('GET', KEYS[5])
if epoch then
    local sep = string.find(epoch, ':', 1, true)
    local low, high = tonumber(string.sub(epoch, 1, sep - 1)), tonumber(string.sub(epoch, sep + 1))
    if fire >= low and fire < high then return {'duplicate', 'may-have-been-claimed'} end
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[3])
-- The candidates are the records beyond the newest ARGV[5], oldest first, never at or
-- after the cutoff (at most ARGV[9] of them); of those only finished ones go: an unfinished
-- one stays, or its fire would look free, and the offset steps over it. Batches keep
-- unpack() within Lua's C stack.
local excess = math.min(redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[5]), tonumber(ARGV[9]))
local trimmed, skipped = 0, 0
while excess > 0 do
    local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[6],
                           'LIMIT', skipped, math.min(excess, 1000))
    if #old == 0 then break end
    excess = excess - #old
    local records = redis.call('HMGET', KEYS[3], unpack(old))
    local victims = {}
    for i = 1, #old do
        local finished = records[i] == false  -- an index entry without a record: nothing to keep
        if not finished then
            local ok, record = pcall(cjson.decode, records[i])
            local outcome = ok and type(record) == 'table' and record['outcome']
            finished = outcome == 'ok' or outcome == 'error' or outcome == 'lost'
        end
        if finished then victims[#victims + 1] = old[i] else skipped = skipped + 1 end
    end
    if #victims > 0 then
        redis.call('ZREM', KEYS[4], unpack(victims))
        redis.call('HDEL', KEYS[3], unpack(victims))
    end
    trimmed = trimmed + #victims
end
return {'claimed', tostring(trimmed)}
"""

# KEYS[1] lease key, KEYS[2] info hash, KEYS[3] runs hash
# ARGV[1] holder id, ARGV[2] token, ARGV[3] fire key, ARGV[4] claim attempt id (never
# empty), ARGV[5] the started run record JSON
# returns {'lost', reason} (the lease, checked first, as in CLAIM_LUA) | {'gone', ''} (no
# record) | {'other-attempt', ''} | {'not-claimed', outcome} | {'started', ''}
START_LUA = """
local holder = redis.call('GET', KEYS[1])
if not holder then return {'lost', 'expired'} end
if holder ~= ARGV[1] then return {'lost', 'not-holder'} end
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[2] then return {'lost', 'stale-token'} end
local current = redis.call('HGET', KEYS[3], ARGV[3])
if not current then return {'gone', ''} end
local ok, record = pcall(cjson.decode, current)
if not ok or type(record) ~= 'table' or record['attempt'] ~= ARGV[4] then
    return {'other-attempt', ''}
end
if record['outcome'] ~= 'claimed' then return {'not-claimed', tostring(record['outcome'])} end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[5])
return {'started', ''}
"""

# KEYS[1] runs hash
# ARGV[1] fire key, ARGV[2] claim attempt id (never empty), ARGV[3] run record JSON
# returns 1 when stored, 0 when the record is gone or another attempt's
FINISH_LUA = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local ok, record = pcall(cjson.decode, current)
if not ok or type(record) ~= 'table' or record['attempt'] ~= ARGV[2] then
    return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# KEYS[1] runs hash, KEYS[2] run index zset
# ARGV[1] fire key, ARGV[2] claim attempt id (never empty)
# returns 1 when deleted, 0 when the record is gone, another attempt's or no longer
# 'claimed' (a started fire is never given back)
UNCLAIM_LUA = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local ok, record = pcall(cjson.decode, current)
if not ok or type(record) ~= 'table' or record['attempt'] ~= ARGV[2]
        or record['outcome'] ~= 'claimed' then
    return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS[1] runs hash, KEYS[2] run index zset
# ARGV[1] limit (>= 1)
# returns the run record JSONs of the newest ARGV[1] fires, newest first
HISTORY_LUA = """
local fires = redis.call('ZREVRANGE', KEYS[2], 0, tonumber(ARGV[1]) - 1)
local out = {}
for i = 1, #fires do
    local record = redis.call('HGET', KEYS[1], fires[i])
    if record then out[#out + 1] = record end
end
return out
"""

# KEYS[1] members hash (replica id -> "<expiry ms, server clock>|<member JSON>")
# ARGV[1] replica id, ARGV[2] member JSON, ARGV[3] ttl in ms
# returns 1
ANNOUNCE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = string.format('%.0f', now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], ARGV[1], expires .. '|' .. ARGV[2])
return 1
"""

# KEYS[1] members hash
# returns the member JSONs whose expiry (server clock) is still ahead; drops the others
MEMBERS_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
    local value = all[i + 1]
    local sep = string.find(value, '|', 1, true)
    local expires = sep and tonumber(string.sub(value, 1, sep - 1))
    if expires and expires > now then
        out[#out + 1] = string.sub(value, sep + 1)
    else
        redis.call('HDEL', KEYS[1], all[i])
    end
end
return out
"""

#: The message RELEASE_LUA publishes on the events channel.
RELEASED = "released"

#: Seconds a fire may be claimed ahead of the Redis server's clock: the runner claims 25 ms
#: ahead, plus room for ordinary clock offsets. Fires further ahead are refused until due
#: (FireNotDue), so a replica whose clock runs fast cannot claim ticks early, and claims
#: forgotten in a data loss are all older than the epoch the next acquire records.
CLAIM_ALLOWANCE = 1.0
#: :data:`CLAIM_ALLOWANCE` in the milliseconds the scripts take.
CLAIM_ALLOWANCE_MS = round(CLAIM_ALLOWANCE * 1000)


@dataclass(frozen=True, slots=True)
class Scripts:
    """Every script, registered with one client (see :meth:`register`)."""

    acquire: Script
    renew: Script
    release: Script
    read: Script
    claim: Script
    start: Script
    finish: Script
    unclaim: Script
    history: Script
    announce: Script
    members: Script

    @classmethod
    def register(cls, client: redis_lib.Redis) -> Scripts:
        """Register every script with ``client``; nothing is sent until a script runs."""
        return cls(
            acquire=client.register_script(ACQUIRE_LUA),
            renew=client.register_script(RENEW_LUA),
            release=client.register_script(RELEASE_LUA),
            read=client.register_script(READ_LUA),
            claim=client.register_script(CLAIM_LUA),
            start=client.register_script(START_LUA),
            finish=client.register_script(FINISH_LUA),
            unclaim=client.register_script(UNCLAIM_LUA),
            history=client.register_script(HISTORY_LUA),
            announce=client.register_script(ANNOUNCE_LUA),
            members=client.register_script(MEMBERS_LUA),
        )

    def all(self) -> tuple[Script, ...]:
        """Every script, to load them all at once (the preflight)."""
        return (
            self.acquire,
            self.renew,
            self.release,
            self.read,
            self.claim,
            self.start,
            self.finish,
            self.unclaim,
            self.history,
            self.announce,
            self.members,
        )


__all__ = [
    "ACQUIRE_LUA",
    "ANNOUNCE_LUA",
    "CLAIM_ALLOWANCE",
    "CLAIM_ALLOWANCE_MS",
    "CLAIM_LUA",
    "FINISH_LUA",
    "HISTORY_LUA",
    "MEMBERS_LUA",
    "READ_LUA",
    "RELEASED",
    "RELEASE_LUA",
    "RENEW_LUA",
    "START_LUA",
    "UNCLAIM_LUA",
    "Scripts",
]
