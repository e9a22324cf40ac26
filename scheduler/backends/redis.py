"""The Redis lease backend: one key per lease, Lua scripts for every compare-and-act.

Key layout, per election name ``N`` (the hash tag ``{N}`` keeps them in one Cluster slot,
so every script touches a single slot)::

    baton:{N}:lease        string  the holder id; PX = lease TTL
    baton:{N}:info         hash    token, replica, host, since; same PX as the lease
    baton:{N}:token        string  the last token issued; never expires
    baton:{N}:runs:<job>   hash    fire key -> RunRecord JSON (its attempt and state live
                                   in the JSON; scripts read them with cjson)
    baton:{N}:runidx:<job> zset    fire key scored by fire key (orders history, trims it)
    baton:{N}:events       pub/sub channel; ``released`` wakes waiting followers

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
Claim's trimming decodes its candidates (the records beyond the newest ``limit``) too and
keeps unfinished ones; it looks at no more than ``TRIM_SCAN`` candidates per claim, so one
claim's work stays bounded even when the limit was lowered a long way (the backlog then
goes over the following claims).

Bounded calls. ``socket_timeout`` and ``socket_connect_timeout`` are both ``op_timeout`` and
the connection retry policy is ``Retry(NoBackoff(), 0)``: redis-py's default policy retries
with backoff, which can hold one call for a whole network partition, and retry policy
belongs to the elector. Scripts go through ``register_script`` (EVALSHA with a NOSCRIPT
fallback), so a restarted, empty Redis needs no special handling.

A call that times out may still have run on the server: an acquire whose reply was lost
leaves a lease that nobody can renew, and it blocks everyone (its own holder included,
since acquire is ``SET NX``) until its TTL runs out.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import redis as redis_lib
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.retry import Retry

from scheduler.backends.urls import BackendURL, URLForm, parse_host, reveal, split_url
from scheduler.clock import Clock
from scheduler.errors import (
    BackendAuthError,
    BackendError,
    BackendPermanentError,
    BackendUnavailable,
    ClaimLost,
    ConfigError,
    FireNotDue,
    LeaseLost,
    excerpt,
)
from scheduler.firing.runs import Retention, RunRecord, fire_key, from_fire_key
from scheduler.leadership.lease import Holder, Lease, LeaseRecord, local_deadline
from scheduler.leadership.members import Member

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

RELEASED = "released"

#: The fire instant of the preflight's probe runs: long past, so never "not due", and
#: never inside a claim epoch (see ACQUIRE_LUA).
_PREFLIGHT_FIRE = datetime(2000, 1, 1, tzinfo=UTC)

#: Seconds a fire may be claimed ahead of the Redis server's clock: the runner claims 25 ms
#: ahead, plus room for ordinary clock offsets. Fires further ahead are refused until due
#: (FireNotDue), so a replica whose clock runs fast cannot claim ticks early, and claims
#: forgotten in a data loss are all older than the epoch the next acquire records.
CLAIM_ALLOWANCE = 1.0

#: The most history records one claim looks at while trimming (finished ones are deleted,
#: unfinished ones kept). Bounds the script's run time, which blocks the whole server.
TRIM_SCAN = 1000

#: The port of a Redis URL without one.
DEFAULT_PORT = 6379
#: The highest database number a URL may name. Redis numbers its databases from 0 to
#: ``databases - 1`` (16 by default: 0-15; Redis Cluster has only 0); the bound catches
#: typos without refusing servers configured with more.
MAX_DB = 9999

_OPTIONS = ("db", "username", "password", "client_name")
_TLS_OPTIONS = (
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_cert_reqs",
    "ssl_check_hostname",
)
_FORMS = {
    "redis": URLForm(
        "redis", "redis://[[user]:password@]host[:port][/db][?option=value&...]", _OPTIONS
    ),
    "rediss": URLForm(
        "rediss",
        "rediss://[[user]:password@]host[:port][/db][?option=value&...]",
        _OPTIONS + _TLS_OPTIONS,
    ),
}
# Query options that would undo the bounded, non-retrying calls; op_timeout sets them.
_MANAGED_OPTIONS = (
    "socket_timeout",
    "socket_connect_timeout",
    "timeout",
    "retry_on_timeout",
    "retry_on_error",
)
_REFUSED = {
    option: "remove it from the URL; Baton bounds every call by op_timeout and never "
    "retries inside one"
    for option in _MANAGED_OPTIONS
}
_CLIENT_NAME = re.compile(r"[!-~]{1,64}")

# Server replies that mean "not now" rather than "never": a failover in progress, a busy
# script, a full server. redis-py strips the code from the replies it maps to a class, so
# both the classes and the raw prefixes are checked.
_TRANSIENT_ERRORS = (
    redis_lib.exceptions.ReadOnlyError,
    redis_lib.exceptions.ClusterDownError,
    redis_lib.exceptions.TryAgainError,
    redis_lib.exceptions.OutOfMemoryError,
)
_TRANSIENT_REPLIES = ("LOADING", "BUSY", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN")
_AUTH_REPLIES = ("WRONGPASS", "NOAUTH", "invalid username-password pair", "invalid password")
# What a command inside a script says when the ACL denies it a command, a key or a channel
# (Redis 7.0: "The user executing the script can't ..."; later: NOPERM in the text).
# redis-py maps only replies that start with NOPERM to NoPermissionError.
_DENIED_REPLIES = ("NOPERM", "The user executing the script can't", "no permissions to")
# The server does not offer a command Baton needs (renamed or disabled by its operator).
_MISSING_REPLIES = ("unknown command", "ERR unknown command")


def _keys(name: str) -> tuple[str, str, str]:
    """The lease, info and token keys of election ``name``."""
    if "{" in name or "}" in name:
        # A brace would change the Cluster hash tag and split the keys over slots.
        raise ConfigError("cluster", f"election name {name!r} must not contain '{{' or '}}'")
    prefix = f"baton:{{{name}}}"
    return f"{prefix}:lease", f"{prefix}:info", f"{prefix}:token"


def _run_keys(name: str, job: str) -> tuple[str, str]:
    """The runs hash and run index keys of ``job`` in election ``name``."""
    _keys(name)
    return f"baton:{{{name}}}:runs:{job}", f"baton:{{{name}}}:runidx:{job}"


def _epoch_key(name: str) -> str:
    _keys(name)
    return f"baton:{{{name}}}:epoch"


def _members_key(name: str) -> str:
    _keys(name)
    return f"baton:{{{name}}}:members"


def _channel(name: str) -> str:
    return f"baton:{{{name}}}:events"


def _ttl_ms(ttl: float) -> int:
    ms = round(ttl * 1000)
    if ms < 1:
        raise ValueError(f"lease ttl must be at least 0.001 s, got {ttl!r}")
    return ms


@dataclass(frozen=True, slots=True, kw_only=True)
class RedisTarget:
    """A parsed ``redis://`` or ``rediss://`` URL.

    Attributes:
        tls: ``rediss://``: TLS with the server certificate and host name always verified.
        host: the server's host name or IP address (IPv6 without brackets).
        port: 1-65535 (default 6379).
        db: the database number, 0 to :data:`MAX_DB` (default 0).
        username: the ACL user, or ``None`` (Redis's ``default`` user).
        password: the password (never shown), or ``None``.
        client_name: the name CLIENT LIST shows for Baton's connections, or ``None``.
        ssl_ca_certs: PEM file of the CAs to verify the server with (default: system CAs).
        ssl_certfile: PEM client certificate, for servers that require one.
        ssl_keyfile: the private key of ``ssl_certfile``.
        shown: the URL with the password (and secret option values) replaced by ``***``.
    """

    tls: bool
    host: str
    port: int
    db: int
    username: str | None
    password: str | None = field(repr=False)
    client_name: str | None
    ssl_ca_certs: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    shown: str


def parse_url(url: str | BackendURL) -> RedisTarget:
    """Parse ``redis://[[user]:password@]host[:port][/db][?option=value&...]``.

    ``rediss://`` is the same over TLS. The password may be given in the URL's credentials
    (as typed, or percent-encoded) or as ``?password=``, not both; the user likewise as
    ``?username=``. Options: ``db`` (instead of the path), ``username``, ``password``,
    ``client_name``; ``rediss://`` also ``ssl_ca_certs``, ``ssl_certfile`` and
    ``ssl_keyfile`` (existing files, the last two together), ``ssl_cert_reqs=required`` and
    ``ssl_check_hostname=true`` (the only values: verification cannot be turned off).
    Timeouts and retries are not options: ``op_timeout`` bounds every call.

    Raises:
        ConfigError: naming the problem, the redacted URL and the allowed options (key
            ``backend``).
    """
    text = reveal(url)
    scheme = text.partition("://")[0].lower()
    form = _FORMS.get(scheme, _FORMS["redis"])
    parts = split_url(text, form, _REFUSED)
    options = parts.options
    host, port = parse_host(parts.hosts, DEFAULT_PORT, form, text)

    db_text = options.get("db")
    if parts.path not in ("", "/"):
        if db_text is not None:
            raise form.error(text, "the database is given twice (in the path and as ?db=)")
        db_text = parts.path[1:]
    db = 0
    if db_text is not None:
        if not (db_text.isascii() and db_text.isdigit() and len(db_text) <= 9):
            raise form.error(
                text,
                f"the database must be a number from 0 to {MAX_DB}, got {excerpt(db_text, 20)}",
            )
        db = int(db_text)
        if db > MAX_DB:
            raise form.error(text, f"the database must be a number from 0 to {MAX_DB}, got {db}")

    username, password = parts.user, parts.password
    if "username" in options:
        if username:
            raise form.error(text, "the user is given twice (before '@' and as ?username=)")
        username = options["username"]
    if "password" in options:
        if password is not None:
            raise form.error(text, "the password is given twice (before '@' and as ?password=)")
        password = options["password"]
    if username is not None and password is None:
        raise form.error(text, "a user needs a password (write [user]:password@)")
    if password == "":
        raise form.error(text, "the password is empty")

    client_name = options.get("client_name")
    if client_name is not None and not _CLIENT_NAME.fullmatch(client_name):
        raise form.error(text, "client_name must be 1 to 64 printable characters without spaces")

    if scheme == "rediss":
        if options.get("ssl_cert_reqs", "required").lower() != "required":
            raise form.error(
                text,
                "ssl_cert_reqs must be 'required': Baton never connects to a server "
                "whose certificate it cannot verify",
            )
        if options.get("ssl_check_hostname", "true").lower() not in ("true", "yes", "1"):
            raise form.error(
                text,
                "ssl_check_hostname must stay on: a certificate is only proof of identity "
                "for the host it names",
            )
        if ("ssl_certfile" in options) != ("ssl_keyfile" in options):
            raise form.error(
                text, "ssl_certfile and ssl_keyfile go together (give both or neither)"
            )
        for option in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            if option in options and not Path(options[option]).is_file():
                raise form.error(text, f"{option} names no file: {excerpt(options[option], 80)}")
    return RedisTarget(
        tls=scheme == "rediss",
        host=host,
        port=port,
        db=db,
        username=username or None,
        password=password,
        client_name=client_name,
        ssl_ca_certs=options.get("ssl_ca_certs"),
        ssl_certfile=options.get("ssl_certfile"),
        ssl_keyfile=options.get("ssl_keyfile"),
        shown=parts.shown,
    )


class RedisBackend:
    """Leases and run records in one Redis server (or one Cluster slot per election).

    Open it with :meth:`from_url`. Safe to share between threads, except that
    :meth:`wait_for_change` must be called from one thread only.

    Args:
        client: a client whose calls are bounded and never retried (see :meth:`from_url`).
        url: the redacted backend URL, used in every error message.
        clock: the clock lease deadlines and ``since`` stamps are read from.
    """

    def __init__(self, client: redis_lib.Redis, url: str, clock: Clock) -> None:
        self.url = url
        self._client = client
        self._clock = clock
        self._acquire = client.register_script(ACQUIRE_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._release = client.register_script(RELEASE_LUA)
        self._read = client.register_script(READ_LUA)
        self._claim = client.register_script(CLAIM_LUA)
        self._start = client.register_script(START_LUA)
        self._finish = client.register_script(FINISH_LUA)
        self._unclaim = client.register_script(UNCLAIM_LUA)
        self._history = client.register_script(HISTORY_LUA)
        self._announce = client.register_script(ANNOUNCE_LUA)
        self._members = client.register_script(MEMBERS_LUA)
        self._scripts = (
            self._acquire,
            self._renew,
            self._release,
            self._read,
            self._claim,
            self._start,
            self._finish,
            self._unclaim,
            self._history,
            self._announce,
            self._members,
        )
        self._floors: dict[str, int] = {}
        self._floors_lock = threading.Lock()
        self._pubsub: PubSub | None = None
        self._channels: set[str] = set()
        self._closed = threading.Event()

    @classmethod
    def from_url(cls, url: str | BackendURL, *, op_timeout: float, clock: Clock) -> RedisBackend:
        """Open ``redis://[[user]:password@]host[:port][/db]`` or ``rediss://...`` (TLS).

        No connection is made until the first call.

        Args:
            url: the server URL (see :func:`parse_url` for its options).
            op_timeout: seconds each connect and each reply may take.
            clock: the clock deadlines are computed from.

        Raises:
            ConfigError: the URL is malformed, has an option not allowed, or tries to weaken
                TLS verification or the timeouts (key ``backend``).
        """
        target = parse_url(url)
        options: dict[str, Any] = {
            "socket_timeout": op_timeout,
            "socket_connect_timeout": op_timeout,
            "retry": Retry(NoBackoff(), 0),  # no retries, for timeouts and errors alike
            "retry_on_error": [],
            "decode_responses": True,
        }
        if target.tls:
            options.update(
                ssl=True,
                ssl_cert_reqs="required",
                ssl_check_hostname=True,
                ssl_ca_certs=target.ssl_ca_certs,
                ssl_certfile=target.ssl_certfile,
                ssl_keyfile=target.ssl_keyfile,
            )
        client = redis_lib.Redis(
            host=target.host,
            port=target.port,
            db=target.db,
            username=target.username,
            password=target.password,
            client_name=target.client_name,
            **options,
        )
        return cls(client, target.shown, clock)

    def __repr__(self) -> str:
        return f"RedisBackend({self.url!r})"

    # --- the LeaseBackend protocol -------------------------------------------------------

    def try_acquire(self, name: str, holder: Holder, ttl: float) -> Lease | None:
        """Take lease ``name`` with ``SET NX PX`` and a new fencing token, in one script."""
        lease_key, info_key, token_key = _keys(name)
        ttl_ms = _ttl_ms(ttl)
        since = self._clock.now().isoformat()
        sent_at = self._clock.monotonic()
        with self._errors():
            reply = self._acquire(
                keys=[lease_key, info_key, token_key, _epoch_key(name)],
                args=[
                    holder.id,
                    ttl_ms,
                    self._floor(name),
                    holder.replica_id,
                    holder.host,
                    since,
                    round(CLAIM_ALLOWANCE * 1000),
                ],
            )
        acquired, token = int(reply[0]), int(reply[1])
        self._observe(name, token)
        if not acquired:
            return None
        return Lease(
            name=name,
            holder=holder,
            token=token,
            ttl=ttl,
            sent_at=sent_at,
            deadline=local_deadline(sent_at, ttl),
        )

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` if its holder id and token are still the ones stored."""
        lease_key, info_key, _ = _keys(lease.name)
        ttl_ms = _ttl_ms(lease.ttl)
        sent_at = self._clock.monotonic()
        with self._errors():
            reply = self._renew(
                keys=[lease_key, info_key], args=[lease.holder.id, str(lease.token), ttl_ms]
            )
        if reply != "ok":
            raise LeaseLost(lease.name, str(reply))
        self._observe(lease.name, lease.token)
        return lease.renewed(sent_at)

    def release(self, lease: Lease) -> None:
        """Delete ``lease`` if it is still ours and wake the followers; else do nothing."""
        lease_key, info_key, _ = _keys(lease.name)
        with self._errors():
            self._release(
                keys=[lease_key, info_key],
                args=[lease.holder.id, str(lease.token), _channel(lease.name)],
            )

    def watch(self, lease: Lease, on_lost: Callable[[str], None]) -> None:
        """Do nothing: Redis pushes no expiry news, so loss shows up at the next renewal.

        Keyspace notifications could, but they are off by default, need server-side
        configuration, and pub/sub delivery is at-most-once anyway.
        """

    def read(self, name: str) -> LeaseRecord | None:
        """The holder of ``name`` and its remaining TTL, read atomically."""
        lease_key, info_key, _ = _keys(name)
        with self._errors():
            reply = self._read(keys=[lease_key, info_key])
        if not reply:
            return None
        replica, host, token, since, pttl = reply
        self._observe(name, int(token))
        return LeaseRecord(
            name=name,
            replica_id=str(replica),
            host=str(host),
            token=int(token),
            since=datetime.fromisoformat(since) if since else from_fire_key(0),
            ttl_left=int(pttl) / 1000 if int(pttl) >= 0 else None,
        )

    def wait_for_change(self, name: str, timeout: float) -> None:
        """Block up to ``timeout`` s on the events channel; return early on ``released``.

        Backend errors are not raised: the wait runs out its time instead (a follower
        calls this in a loop, and returning early on every error would make it spin).
        Real time is used, not the injected clock: this is a wait on a socket.
        """
        channel = _channel(name)
        end = time.monotonic() + timeout
        try:
            pubsub = self._subscribed(channel)
            while (remaining := end - time.monotonic()) > 0:
                message = pubsub.get_message(ignore_subscribe_messages=True, timeout=remaining)
                if (
                    message is not None
                    and message.get("type") == "message"
                    and message.get("channel") == channel
                    and message.get("data") == RELEASED
                ):
                    return
        except (redis_lib.RedisError, OSError, ValueError, AttributeError):
            # ValueError/AttributeError: redis-py raises these from a PubSub whose
            # connection was torn down under it (e.g. by close()). Start afresh next time.
            self._drop_pubsub()
            self._closed.wait(max(0.0, end - time.monotonic()))

    def claim(self, lease: Lease, run: RunRecord, retention: Retention) -> RunRecord | None:
        """Store ``run`` if ``lease`` is held and the fire unclaimed; trim per ``retention``.

        A resend of ``run.attempt`` gets the record that attempt stored.
        """
        lease_key, info_key, _ = _keys(lease.name)
        runs_key, index_key = _run_keys(lease.name, run.job)
        cutoff = run.key - round(retention.protect * 1000)
        with self._errors():
            status, detail = self._claim(
                keys=[lease_key, info_key, runs_key, index_key, _epoch_key(lease.name)],
                args=[
                    lease.holder.id,
                    str(lease.token),
                    str(run.key),
                    run.to_json(),
                    max(retention.limit, 0),
                    str(cutoff),
                    round(CLAIM_ALLOWANCE * 1000),
                    run.attempt,
                    TRIM_SCAN,
                ],
            )
        if status == "lost":
            raise LeaseLost(lease.name, str(detail))
        if status == "early":
            raise FireNotDue(lease.name, max(int(detail), 1) / 1000)
        self._observe(lease.name, max(lease.token, run.token))
        if status == "resent":
            return RunRecord.from_json(str(detail))
        return run if status == "claimed" else None

    def start(self, lease: Lease, run: RunRecord) -> RunRecord:
        """Store ``run`` (``running``) over its attempt's ``claimed`` record, lease held."""
        lease_key, info_key, _ = _keys(lease.name)
        runs_key, _ = _run_keys(lease.name, run.job)
        if not run.attempt:
            raise ClaimLost(run.job, run.scheduled_time.isoformat(), "other-attempt")
        with self._errors():
            status, detail = self._start(
                keys=[lease_key, info_key, runs_key],
                args=[lease.holder.id, str(lease.token), str(run.key), run.attempt, run.to_json()],
            )
        if status == "lost":
            raise LeaseLost(lease.name, str(detail))
        if status != "started":
            raise ClaimLost(run.job, run.scheduled_time.isoformat(), str(status))
        self._observe(lease.name, max(lease.token, run.token))
        return run

    def finish(self, name: str, run: RunRecord) -> None:
        """Overwrite the record of ``run`` if ``run.attempt`` wrote it."""
        runs_key, _ = _run_keys(name, run.job)
        if not run.attempt:
            return  # a record from before attempts: no attempt matches it
        with self._errors():
            self._finish(keys=[runs_key], args=[str(run.key), run.attempt, run.to_json()])
        self._observe(name, run.token)

    def lookup(self, name: str, job: str, scheduled_time: datetime) -> RunRecord | None:
        """The record of (``job``, ``scheduled_time``) from the runs hash, or ``None``."""
        runs_key, _ = _run_keys(name, job)
        with self._errors():
            raw = self._client.hget(runs_key, str(fire_key(scheduled_time)))
        if raw is None:
            return None
        record = RunRecord.from_json(cast(str, raw))
        self._observe(name, record.token)
        return record

    def unclaim(self, name: str, run: RunRecord) -> bool:
        """Delete the record of ``run``'s fire (hash and index) if ``run.attempt`` wrote it
        and it is still ``claimed``."""
        runs_key, index_key = _run_keys(name, run.job)
        if not run.attempt:
            return False
        with self._errors():
            deleted = self._unclaim(keys=[runs_key, index_key], args=[str(run.key), run.attempt])
        return bool(deleted)

    def history(self, name: str, job: str, limit: int) -> list[RunRecord]:
        """The newest ``limit`` records of ``job``, newest fire first."""
        if limit <= 0:
            return []
        runs_key, index_key = _run_keys(name, job)
        with self._errors():
            reply = self._history(keys=[runs_key, index_key], args=[limit])
        records = [RunRecord.from_json(raw) for raw in reply]
        if records:
            self._observe(name, max(record.token for record in records))
        return records

    def claimed(self, name: str, job: str, since: datetime, until: datetime) -> set[int]:
        """Fire keys of ``job`` claimed in ``[since, until]``, from the run index."""
        _, index_key = _run_keys(name, job)
        with self._errors():
            members = self._client.zrangebyscore(index_key, fire_key(since), fire_key(until))
        return {int(member) for member in cast(list[str], members)}

    def announce(self, name: str, member: Member, ttl: float) -> None:
        """Store ``member``'s presence with an expiry on the server's clock."""
        with self._errors():
            self._announce(
                keys=[_members_key(name)], args=[member.replica_id, member.to_json(), _ttl_ms(ttl)]
            )

    def withdraw(self, name: str, replica_id: str) -> None:
        """Delete ``replica_id``'s presence."""
        with self._errors():
            self._client.hdel(_members_key(name), replica_id)

    def members(self, name: str) -> list[Member]:
        """Unexpired presence records (expired ones are pruned on the way), by replica id."""
        with self._errors():
            reply = self._members(keys=[_members_key(name)])
        return sorted((Member.from_json(raw) for raw in reply), key=lambda m: m.replica_id)

    def set_control(self, name: str, key: str, value: str | None) -> None:
        """Set or delete the control ``key`` (a field of the cluster's controls hash)."""
        controls = f"baton:{{{name}}}:controls"
        _keys(name)
        with self._errors():
            if value is None:
                self._client.hdel(controls, key)
            else:
                self._client.hset(controls, key, value)

    def controls(self, name: str) -> dict[str, str]:
        """Every control of cluster ``name``."""
        _keys(name)
        with self._errors():
            reply = self._client.hgetall(f"baton:{{{name}}}:controls")
        return {str(k): str(v) for k, v in cast(dict[str, str], reply).items()}

    def check(self) -> None:
        """PING the server with our credentials."""
        with self._errors():
            self._client.ping()

    def preflight(self, name: str) -> None:
        """Run every script and command a replica of ``name`` uses once, on probe keys.

        A Redis ACL can deny a command (``EVALSHA``, ``SCRIPT LOAD``, a command inside a
        script), a key pattern or a pub/sub channel; each shows only when used. So this
        loads every script (needed after a server restart), then plays a whole term on
        keys of its own under the cluster's prefix (``baton:{name}:preflight:<random>:*``,
        same hash slot): acquire, renew, claim, start, finish, trim, unclaim, history,
        presence and controls, release (which publishes on the cluster's real channel: a
        spurious wake-up followers shrug off); it reads the real lease and controls and
        subscribes to the real channel once. The probe keys are deleted at the end. The
        user thus needs the keys ``baton:*`` (or ``baton:{<cluster>}:*``) and the channel
        ``baton:{<cluster>}:events``.

        Raises:
            BackendUnavailable: no answer in time.
            BackendAuthError: a command, key or channel is denied, or credentials refused.
        """
        lease_key, info_key, _ = _keys(name)
        prefix = f"baton:{{{name}}}:preflight:{uuid.uuid4().hex}"
        probe = {k: f"{prefix}:{k}" for k in ("lease", "info", "token", "epoch", "runs", "index")}
        probe["members"], probe["controls"] = f"{prefix}:members", f"{prefix}:controls"
        holder = f"preflight-{uuid.uuid4().hex}"
        ttl_ms = 10_000
        first, second = (
            RunRecord(
                "preflight", _PREFLIGHT_FIRE + timedelta(seconds=i), holder, 0, _PREFLIGHT_FIRE
            )
            for i in range(2)
        )
        lease, runs = [probe["lease"], probe["info"]], [probe["runs"], probe["index"]]
        allowance = round(CLAIM_ALLOWANCE * 1000)
        with self._errors():
            try:
                # DEL first: the clean-up needs it, so nothing is left behind when it is denied.
                self._client.delete(*probe.values())
                for script in self._scripts:
                    self._client.script_load(script.script)
                self._read(keys=[lease_key, info_key])
                self._client.hgetall(f"baton:{{{name}}}:controls")
                _, token = self._acquire(
                    keys=[*lease, probe["token"], probe["epoch"]],
                    args=[holder, ttl_ms, 0, holder, "preflight", "", allowance],
                )
                token = str(token)
                self._renew(keys=lease, args=[holder, token, ttl_ms])
                for run, limit in ((first, 10), (second, 1)):  # the second trims the first
                    self._claim(
                        keys=[*lease, *runs, probe["epoch"]],
                        args=[holder, token, str(run.key), run.to_json(), limit,
                              str(run.key), allowance, run.attempt, TRIM_SCAN],
                    )  # fmt: skip
                    if run is first:
                        started = run.started_now(_PREFLIGHT_FIRE)
                        self._start(
                            keys=[*lease, probe["runs"]],
                            args=[holder, token, str(run.key), run.attempt, started.to_json()],
                        )
                        done = started.finished("ok", _PREFLIGHT_FIRE, "")
                        self._finish(
                            keys=[probe["runs"]], args=[str(run.key), run.attempt, done.to_json()]
                        )
                self._unclaim(keys=runs, args=[str(second.key), second.attempt])
                self._history(keys=runs, args=[10])
                self._client.hget(probe["runs"], str(first.key))
                self._client.zrangebyscore(probe["index"], 0, second.key)
                self._announce(keys=[probe["members"]], args=[holder, "{}", ttl_ms])
                self._members(keys=[probe["members"]])
                self._client.hdel(probe["members"], holder)
                self._client.hset(probe["controls"], "preflight", "1")
                self._client.hdel(probe["controls"], "preflight")
                self._release(keys=lease, args=[holder, token, _channel(name)])
                self._probe_subscribe(_channel(name))
            finally:
                with suppress(redis_lib.RedisError, OSError):
                    self._client.delete(*probe.values())

    def _probe_subscribe(self, channel: str) -> None:
        """Subscribe to ``channel`` on a connection of its own and wait for the answer."""
        pubsub = PubSub(self._client.connection_pool)
        try:
            pubsub.subscribe(channel)
            timeout = self._client.connection_pool.connection_kwargs.get("socket_timeout")
            reply = pubsub.get_message(timeout=float(timeout or 2.0))
            if reply is None:
                raise redis_lib.TimeoutError(f"no answer to SUBSCRIBE {channel}")
        finally:
            with suppress(redis_lib.RedisError, OSError):
                pubsub.close()

    def close(self) -> None:
        """Close the pub/sub connection and the pool; leases are left to expire."""
        self._closed.set()
        self._drop_pubsub()
        with suppress(redis_lib.RedisError, OSError):
            self._client.close()

    # --- helpers -------------------------------------------------------------------------

    def _floor(self, name: str) -> int:
        with self._floors_lock:
            return self._floors.get(name, 0)

    def _observe(self, name: str, token: int) -> None:
        """Remember ``token`` so tokens issued after a Redis data loss exceed it."""
        with self._floors_lock:
            if token > self._floors.get(name, 0):
                self._floors[name] = token

    def _subscribed(self, channel: str) -> PubSub:
        """The kept PubSub, subscribed to ``channel`` (created and subscribed lazily)."""
        if self._pubsub is None:
            self._pubsub = PubSub(self._client.connection_pool)
            self._channels = set()
        if channel not in self._channels:
            self._pubsub.subscribe(channel)
            self._channels.add(channel)
        return self._pubsub

    def _drop_pubsub(self) -> None:
        pubsub, self._pubsub, self._channels = self._pubsub, None, set()
        if pubsub is not None:
            with suppress(redis_lib.RedisError, OSError):
                pubsub.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate redis-py's exceptions into Baton's, naming this backend."""
        try:
            yield
        except redis_lib.AuthenticationError:
            raise BackendAuthError(self.url, "authentication failed: check the password") from None
        except redis_lib.exceptions.NoPermissionError as exc:
            raise BackendAuthError(
                self.url, f"permission denied: the Redis user lacks an ACL permission ({exc})"
            ) from None
        except (redis_lib.ConnectionError, redis_lib.TimeoutError) as exc:
            raise BackendUnavailable(self.url, f"unreachable: {exc}") from exc
        except redis_lib.ResponseError as exc:
            reply = str(exc)
            if any(marker in reply for marker in _AUTH_REPLIES):
                raise BackendAuthError(
                    self.url, "authentication failed: check the password"
                ) from None
            if any(marker in reply for marker in _DENIED_REPLIES):
                raise BackendAuthError(
                    self.url,
                    f"permission denied: the Redis user lacks an ACL permission "
                    f"({reply.split(' script: ', 1)[0]})",
                ) from None
            if reply.startswith(_MISSING_REPLIES):
                raise BackendPermanentError(
                    self.url, f"the server refuses a command Baton needs: {reply[:200]}"
                ) from None
            if isinstance(exc, _TRANSIENT_ERRORS) or reply.startswith(_TRANSIENT_REPLIES):
                raise BackendUnavailable(
                    self.url, f"server cannot serve us now: {type(exc).__name__}: {reply}"
                ) from exc
            raise BackendError(self.url, f"unexpected reply: {reply}") from exc
        except redis_lib.RedisError as exc:
            raise BackendError(self.url, f"unexpected error: {exc}") from exc
        except OSError as exc:
            raise BackendUnavailable(self.url, f"unreachable: {exc}") from exc


__all__ = ["DEFAULT_PORT", "MAX_DB", "RedisBackend", "RedisTarget", "parse_url"]
