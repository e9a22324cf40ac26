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

Batches. ``CLAIM_MANY_LUA``, ``START_MANY_LUA`` and ``FINISH_MANY_LUA`` run, for each run
of a batch, the very Lua function the single script runs (``_LEDGER_LUA``: ``claim_one``,
``start_one``, ``finish_one``), after one lease check. They take the runs as one argument
holding a flat JSON array (a few items per run), not as a few arguments per run: Redis
reads a command's small arguments 16 KB at a time, one read event each, so 1,000 claims
in 5,000 arguments took ~25 reads of the server's event loop, where one argument above
32 KB is read whole (one or two). Fire keys travel as strings (exact, and they are hash
fields), job numbers as numbers; a record's JSON is a string inside, which ``cjson``
gives back byte for byte (records are ASCII: ``json.dumps`` escapes the rest).

Scripts go through ``register_script`` (EVALSHA with a NOSCRIPT fallback), so a restarted,
empty Redis needs no special handling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

import redis as redis_lib
from redis.commands.core import Script

# KEYS[1] lease key, KEYS[2] info hash, KEYS[3] token counter
# ARGV[1] holder id, ARGV[2] TTL in ms, ARGV[3] floor (highest token the caller has seen),
# ARGV[4] replica id, ARGV[5] host, ARGV[6] since (ISO wall time)
# KEYS[4] claim epoch "low:high": fires in [low, high) may have been claimed in lost data
# KEYS[5] the run_id of the server the last acquisition ran on
# ARGV[7] claim allowance in ms (how far ahead of the server clock a fire may be claimed)
# returns {1, new token} when acquired; {0, current holder's token or '0'} when held
# The server's run_id (INFO server) changes at every restart and names another process
# after a failover: either may have lost the last writes (AOF everysec, a replica that
# lagged), counter kept or not, so it opens an epoch as a detected loss does. A name that
# looks fresh on a promoted replica (INFO replication: a second replication ID) may be
# wholly lost: it opens the same epoch.
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
local ok, info = pcall(redis.call, 'INFO', 'server')
local served = ok and string.match(info, 'run_id:(%x+)') or nil
local known = redis.call('GET', KEYS[5])
if served then redis.call('SET', KEYS[5], served) end
if stored < floor or (served and known and known ~= served) then
    -- The caller saw a token this store no longer knows (a restart without persistence,
    -- a rollback to an old snapshot), or the server restarted or failed over since the
    -- last acquisition: any claim of a fire up to now + allowance may be lost.
    redis.call('SET', KEYS[4], '0:' .. string.format('%.0f', now_ms + allowance))
elseif stored == 0 and not redis.call('GET', KEYS[4]) then
    -- Looks fresh. On a promoted replica (a second replication ID) the whole name may be
    -- what the promotion lost, however long that replica lagged: every fire up to now +
    -- allowance. Elsewhere it may have lost data no caller here saw: claims made early (up
    -- to the allowance ahead) just before such a loss are the ones a new leader could repeat.
    local repl_ok, repl = pcall(redis.call, 'INFO', 'replication')
    local previous = repl_ok and string.match(repl, 'master_replid2:(%x+)') or nil
    if previous and string.find(previous, '[^0]') then
        redis.call('SET', KEYS[4], '0:' .. string.format('%.0f', now_ms + allowance))
    else
        redis.call('SET', KEYS[4], string.format('%.0f', now_ms - allowance) .. ':' ..
                   string.format('%.0f', now_ms + allowance))
    end
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

# The Lua functions the claim, start and finish scripts share (each script is this text
# followed by its own body), so a batch acts on each fire exactly as the single script
# does. ``local function`` keeps them out of Lua's globals, which Redis forbids.
#
# lease_lost(lease key, info hash, holder id, token): why the lease is not held
#   ('expired', 'not-holder', 'stale-token'), or nil when it is.
# server_ms(): the server's clock in ms.
# early_by(fire key, now in ms, claim allowance in ms): ms by which the fire lies beyond
#   the allowance, or nil when it may be claimed.
# epoch_of(epoch key): the claim epoch's low and high fire keys, or nil, nil.
# own_record(record JSON, attempt id): whether the record is that attempt's ('' matches
#   none), and the decoded record.
# claim_one(runs hash, run index, epoch low, epoch high, fire key, record JSON, limit,
#   cutoff, attempt id, scan): the claim of one fire whose lease check has passed; returns
#   status, detail as CLAIM_LUA does (never 'lost' or 'early').
# start_one(runs hash, fire key, attempt id, started JSON): status, detail as START_LUA.
# finish_one(runs hash, fire key, attempt id, finished JSON): 1 stored, 0 not.
_LEDGER_LUA = """
local function lease_lost(lease_key, info_key, holder, token)
    local current = redis.call('GET', lease_key)
    if not current then return 'expired' end
    if current ~= holder then return 'not-holder' end
    if redis.call('HGET', info_key, 'token') ~= token then return 'stale-token' end
    return nil
end

local function server_ms()
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function early_by(fire, now_ms, allowance)
    if fire > now_ms + allowance then return fire - now_ms - allowance end
    return nil
end

local function epoch_of(epoch_key)
    local epoch = redis.call('GET', epoch_key)
    if not epoch then return nil, nil end
    local sep = string.find(epoch, ':', 1, true)
    return tonumber(string.sub(epoch, 1, sep - 1)), tonumber(string.sub(epoch, sep + 1))
end

local function own_record(raw, attempt)
    if attempt == '' then return false end
    local ok, record = pcall(cjson.decode, raw)
    return ok and type(record) == 'table' and record['attempt'] == attempt, record
end

local function claim_one(runs, index, low, high, fire_key, json, limit, cutoff, attempt, scan)
    -- The stored record first: a resend must find its own record even for a fire in the
    -- epoch.
    local current = redis.call('HGET', runs, fire_key)
    if current then
        if own_record(current, attempt) then return 'resent', current end
        return 'duplicate', ''
    end
    local fire = tonumber(fire_key)
    if low and fire >= low and fire < high then return 'duplicate', 'may-have-been-claimed' end
    redis.call('HSET', runs, fire_key, json)
    redis.call('ZADD', index, fire_key, fire_key)
    -- The candidates are the records beyond the newest limit, oldest first, never at or
    -- after the cutoff (at most scan of them); of those only finished ones go: an
    -- unfinished one stays, or its fire would look free, and the offset steps over it.
    -- Batches of 1000 keep unpack() within Lua's C stack.
    local excess = math.min(redis.call('ZCARD', index) - tonumber(limit), tonumber(scan))
    local trimmed, skipped = 0, 0
    while excess > 0 do
        local old = redis.call('ZRANGEBYSCORE', index, '-inf', '(' .. cutoff,
                               'LIMIT', skipped, math.min(excess, 1000))
        if #old == 0 then break end
        excess = excess - #old
        local records = redis.call('HMGET', runs, unpack(old))
        local victims = {}
        for i = 1, #old do
            -- an index entry without a record: nothing to keep
            local finished = records[i] == false
            if not finished then
                local ok, record = pcall(cjson.decode, records[i])
                local outcome = ok and type(record) == 'table' and record['outcome']
                finished = outcome == 'ok' or outcome == 'error' or outcome == 'lost'
            end
            if finished then victims[#victims + 1] = old[i] else skipped = skipped + 1 end
        end
        if #victims > 0 then
            redis.call('ZREM', index, unpack(victims))
            redis.call('HDEL', runs, unpack(victims))
        end
        trimmed = trimmed + #victims
    end
    return 'claimed', tostring(trimmed)
end

local function start_one(runs, fire_key, attempt, json)
    local current = redis.call('HGET', runs, fire_key)
    if not current then return 'gone', '' end
    local own, record = own_record(current, attempt)
    if not own then return 'other-attempt', '' end
    if record['outcome'] ~= 'claimed' then return 'not-claimed', tostring(record['outcome']) end
    redis.call('HSET', runs, fire_key, json)
    return 'started', ''
end

local function finish_one(runs, fire_key, attempt, json)
    local current = redis.call('HGET', runs, fire_key)
    if not current or not own_record(current, attempt) then return 0 end
    redis.call('HSET', runs, fire_key, json)
    return 1
end
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
CLAIM_LUA = (
    _LEDGER_LUA
    + """
local lost = lease_lost(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if lost then return {'lost', lost} end
local early = early_by(tonumber(ARGV[3]), server_ms(), tonumber(ARGV[7]))
if early then return {'early', string.format('%.0f', early)} end
local low, high = epoch_of(KEYS[5])
local status, detail = claim_one(KEYS[3], KEYS[4], low, high, ARGV[3], ARGV[4], ARGV[5],
                                 ARGV[6], ARGV[8], ARGV[9])
return {status, detail}
"""
)

# A batch of claims: CLAIM_LUA's checks and writes for each fire, in order, the lease
# checked once (first) and every fire's due time checked before anything is written.
# KEYS[1] lease key, KEYS[2] info hash, KEYS[3] claim epoch, then per job of the batch its
# runs hash and run index zset (job i: KEYS[2 + 2i], KEYS[3 + 2i])
# ARGV[1] holder id, ARGV[2] token, ARGV[3] claim allowance in ms, ARGV[4] retention
# limit, ARGV[5] most trim candidates per claim, ARGV[6] the fires: a JSON array of 5
# items per fire (module docstring, "Batches"): job number i, fire key, run record JSON,
# trim cutoff, attempt id
# returns {'lost', reason} | {'early', ms to wait until the furthest fire is due} (nothing
# written) | {status 1, detail 1, status 2, detail 2, ...}, each as CLAIM_LUA's
CLAIM_MANY_LUA = (
    _LEDGER_LUA
    + """
local lost = lease_lost(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if lost then return {'lost', lost} end
local fires = cjson.decode(ARGV[6])
local now, allowance = server_ms(), tonumber(ARGV[3])
local furthest = nil
for n = 1, #fires, 5 do
    local early = early_by(tonumber(fires[n + 1]), now, allowance)
    if early and (not furthest or early > furthest) then furthest = early end
end
if furthest then return {'early', string.format('%.0f', furthest)} end
local low, high = epoch_of(KEYS[3])
local out = {}
for n = 1, #fires, 5 do
    local job = fires[n]
    local status, detail = claim_one(KEYS[2 + 2 * job], KEYS[3 + 2 * job], low, high,
                                     fires[n + 1], fires[n + 2], ARGV[4], fires[n + 3],
                                     fires[n + 4], ARGV[5])
    out[#out + 1] = status
    out[#out + 1] = detail
end
return out
"""
)

# KEYS[1] lease key, KEYS[2] info hash, KEYS[3] runs hash
# ARGV[1] holder id, ARGV[2] token, ARGV[3] fire key, ARGV[4] claim attempt id (never
# empty), ARGV[5] the started run record JSON
# returns {'lost', reason} (the lease, checked first, as in CLAIM_LUA) | {'gone', ''} (no
# record) | {'other-attempt', ''} | {'not-claimed', outcome} | {'started', ''}
START_LUA = (
    _LEDGER_LUA
    + """
local lost = lease_lost(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if lost then return {'lost', lost} end
local status, detail = start_one(KEYS[3], ARGV[3], ARGV[4], ARGV[5])
return {status, detail}
"""
)

# A batch of starts: START_LUA's check and write for each run, in order, the lease checked
# once (first); a refused run does not stop the others.
# KEYS[1] lease key, KEYS[2] info hash, then per job of the batch its runs hash (job i:
# KEYS[2 + i])
# ARGV[1] holder id, ARGV[2] token, ARGV[3] the runs: a JSON array of 4 items per run
# (module docstring, "Batches"): job number i, fire key, claim attempt id (never empty),
# started run record JSON
# returns {'lost', reason} | {status 1, detail 1, status 2, detail 2, ...}, each as
# START_LUA's
START_MANY_LUA = (
    _LEDGER_LUA
    + """
local lost = lease_lost(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if lost then return {'lost', lost} end
local runs = cjson.decode(ARGV[3])
local out = {}
for n = 1, #runs, 4 do
    local status, detail = start_one(KEYS[2 + runs[n]], runs[n + 1], runs[n + 2], runs[n + 3])
    out[#out + 1] = status
    out[#out + 1] = detail
end
return out
"""
)

# KEYS[1] runs hash
# ARGV[1] fire key, ARGV[2] claim attempt id (never empty), ARGV[3] run record JSON
# returns 1 when stored, 0 when the record is gone or another attempt's
FINISH_LUA = (
    _LEDGER_LUA
    + """
return finish_one(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
"""
)

# A batch of outcomes: FINISH_LUA for each run, in order (no lease needed).
# KEYS: per job of the batch its runs hash (job i: KEYS[i])
# ARGV[1] the runs: a JSON array of 4 items per run (module docstring, "Batches"): job
# number i, fire key, claim attempt id (never empty), run record JSON
# returns how many outcomes were stored
FINISH_MANY_LUA = (
    _LEDGER_LUA
    + """
local runs = cjson.decode(ARGV[1])
local stored = 0
for n = 1, #runs, 4 do
    stored = stored + finish_one(KEYS[runs[n]], runs[n + 1], runs[n + 2], runs[n + 3])
end
return stored
"""
)

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


class ScriptSet:
    """The base of a frozen dataclass of scripts registered with one client: one
    :class:`Script` field per entry of :attr:`SOURCES`."""

    __slots__ = ()

    #: Each field's Lua source, in the order :meth:`all` gives the scripts.
    SOURCES: ClassVar[dict[str, str]] = {}

    @classmethod
    def register(cls, client: redis_lib.Redis) -> Self:
        """Register every script with ``client``; nothing is sent until a script runs."""
        scripts = {name: client.register_script(lua) for name, lua in cls.SOURCES.items()}
        return cls(**scripts)

    def all(self) -> tuple[Script, ...]:
        """Every script, to load them all at once (the preflight)."""
        return tuple(getattr(self, name) for name in self.SOURCES)


@dataclass(frozen=True, slots=True)
class Scripts(ScriptSet):
    """Every script of the Redis backend, registered with one client (see
    :meth:`~ScriptSet.register`)."""

    SOURCES: ClassVar[dict[str, str]] = {
        "acquire": ACQUIRE_LUA,
        "renew": RENEW_LUA,
        "release": RELEASE_LUA,
        "read": READ_LUA,
        "claim": CLAIM_LUA,
        "claim_many": CLAIM_MANY_LUA,
        "start": START_LUA,
        "start_many": START_MANY_LUA,
        "finish": FINISH_LUA,
        "finish_many": FINISH_MANY_LUA,
        "unclaim": UNCLAIM_LUA,
        "history": HISTORY_LUA,
        "announce": ANNOUNCE_LUA,
        "members": MEMBERS_LUA,
    }

    acquire: Script
    renew: Script
    release: Script
    read: Script
    claim: Script
    claim_many: Script
    start: Script
    start_many: Script
    finish: Script
    finish_many: Script
    unclaim: Script
    history: Script
    announce: Script
    members: Script


__all__ = [
    "ACQUIRE_LUA",
    "ANNOUNCE_LUA",
    "CLAIM_ALLOWANCE",
    "CLAIM_ALLOWANCE_MS",
    "CLAIM_LUA",
    "CLAIM_MANY_LUA",
    "FINISH_LUA",
    "FINISH_MANY_LUA",
    "HISTORY_LUA",
    "MEMBERS_LUA",
    "READ_LUA",
    "RELEASED",
    "RELEASE_LUA",
    "RENEW_LUA",
    "START_LUA",
    "START_MANY_LUA",
    "UNCLAIM_LUA",
    "ScriptSet",
    "Scripts",
]
