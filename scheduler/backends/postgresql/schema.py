"""The tables and server-side functions of Baton's PostgreSQL schema, as commented module
constants, and the DDL ``baton schema --print-sql`` prints.

Everything lives in one schema (``baton`` unless the URL says ``?schema=``)::

    meta(key PK, value)                      -- schema_version
    tokens(name PK, last_token, timeline, epoch_low, epoch_high)   -- never deleted
    lease(name PK, holder_id, token, replica, host, since, ttl_ms, expires_at)
    runs(name, job, fire_key, token, outcome, attempt, record, PK(name, job, fire_key))
    members(name, replica_id, record, expires_at, PK(name, replica_id))
    controls(name, key, value, PK(name, key))

**The database's clock.** Every expiry is a ``timestamptz`` written and compared with
``clock_timestamp()``, the server's clock at the moment of the statement. Never ``now()``:
it is the start of the *transaction*, so a lease taken in a transaction that waited on a lock
would be stamped in the past, and a check would compare against a frozen instant (ShedLock's
"use DB time" documents the same trap). Replica clocks never enter a lease decision.

**Functions.** Each compare-and-act is one PL/pgSQL function: a single statement from the
client (one round trip, no session state, so it works through PgBouncer in transaction
mode), atomic as a transaction, and the same rules for a batch as for one run. The lease
is locked (``FOR SHARE``) by the claim and start functions for the rest of their
transaction, so a takeover (``FOR UPDATE`` in :data:`ACQUIRE_FUNCTION`) waits for a claim in
flight to commit and then sees it: no claim lands under a lease that has already passed.

**Fencing tokens.** ``tokens.last_token`` per election name, incremented in the acquiring
transaction and never deleted. An asynchronous standby promoted after a primary's loss may
lack the last acquisitions, so the token also folds in the server's **timeline**: a new
token is at least ``timeline << 40``, and a promotion always moves to a higher timeline, so
every token issued after it exceeds every token issued before (up to 2^40 acquisitions per
timeline). The timeline is read from the current WAL file name, which changes at the
promotion itself (``pg_control_checkpoint()`` would lag until the next checkpoint). The
caller's *floor* (the highest token it saw) is folded in too, as on Redis.

**The claim epoch**, as on Redis after a data loss: when the acquiring transaction sees a
timeline newer than the one the name's tokens row last saw (a promotion: claims made on the
old primary may be missing here), a row that is new on a server that was ever promoted
(timeline above 1: the row itself may be what the promotion lost), or a floor above its
counter (a restore from an older backup), every fire up to the server's clock plus the
claim allowance that has no record is refused (``may-have-been-claimed``): the catch-up
then skips what may already have run. On a server never promoted (timeline 1) a new row
needs no epoch: nothing can have been lost (Redis, which cannot tell, gives every fresh
name one).

The schema version is :data:`SCHEMA_VERSION` in ``meta``; an older or newer one is refused.
"""

from __future__ import annotations

#: The version of the tables and functions below, kept in ``meta.schema_version``.
SCHEMA_VERSION = 1

#: How far ahead of the server's clock a fire may be claimed, in ms: the fire loop claims
#: at most 0.5 s ahead, plus room for clock offsets. Further ones are refused until due
#: (``FireNotDue``), which bounds the claims a promotion can lose by the epoch.
CLAIM_ALLOWANCE_MS = 1000

#: The channel :data:`RELEASE_FUNCTION` notifies, with the election name as the payload.
CHANNEL = "baton_lease_released"

# One statement per entry, run in one transaction; {s} is the (validated) schema name.
TABLES = (
    "CREATE SCHEMA IF NOT EXISTS {s}",
    """CREATE TABLE IF NOT EXISTS {s}.meta (
    key   text PRIMARY KEY,
    value text NOT NULL
)""",
    # never deleted: tokens are never reused, and the epoch outlives every term
    """CREATE TABLE IF NOT EXISTS {s}.tokens (
    name       text PRIMARY KEY,
    last_token bigint NOT NULL,
    timeline   bigint NOT NULL,
    epoch_low  bigint,
    epoch_high bigint
)""",
    """CREATE TABLE IF NOT EXISTS {s}.lease (
    name       text PRIMARY KEY,
    holder_id  text NOT NULL,
    token      bigint NOT NULL,
    replica    text NOT NULL,
    host       text NOT NULL,
    since      text NOT NULL,
    ttl_ms     integer NOT NULL,
    expires_at timestamptz NOT NULL
)""",
    # outcome and attempt index the JSON record, written with it in the same statement
    """CREATE TABLE IF NOT EXISTS {s}.runs (
    name     text NOT NULL,
    job      text NOT NULL,
    fire_key bigint NOT NULL,
    token    bigint NOT NULL,
    outcome  text NOT NULL,
    attempt  text NOT NULL,
    record   text NOT NULL,
    PRIMARY KEY (name, job, fire_key)
)""",
    """CREATE TABLE IF NOT EXISTS {s}.members (
    name       text NOT NULL,
    replica_id text NOT NULL,
    record     text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (name, replica_id)
)""",
    """CREATE TABLE IF NOT EXISTS {s}.controls (
    name  text NOT NULL,
    key   text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (name, key)
)""",
)

# timeline(): the server's current timeline, from the name of the WAL file being written
# (its first 8 hex digits). Fails on a standby (no WAL is written there), which is right:
# nothing that needs it may run on one.
TIMELINE_FUNCTION = """CREATE OR REPLACE FUNCTION {s}.timeline() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint
$$"""

# now_ms(): the server's clock in ms since the epoch (clock_timestamp, never now()).
NOW_MS_FUNCTION = """CREATE OR REPLACE FUNCTION {s}.now_ms() RETURNS bigint
LANGUAGE sql VOLATILE AS $$
    SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint
$$"""

# lease_lost(name, holder id, token, lock mode): why the lease is not held ('released',
# 'not-holder', 'stale-token', 'expired'), or NULL when it is; locks the lease row (FOR
# SHARE, or FOR UPDATE when p_update) until the caller's transaction ends, so no takeover
# commits in between. A token of an older timeline is stale: after a promotion every term
# acquires anew (a new token, and the claim epoch of ACQUIRE_FUNCTION).
LEASE_LOST_FUNCTION = """CREATE OR REPLACE FUNCTION {s}.lease_lost(
    p_name text, p_holder text, p_token bigint, p_update boolean) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    cur record;
BEGIN
    IF p_update THEN
        SELECT holder_id, token, expires_at INTO cur FROM {s}.lease
            WHERE name = p_name FOR UPDATE;
    ELSE
        SELECT holder_id, token, expires_at INTO cur FROM {s}.lease
            WHERE name = p_name FOR SHARE;
    END IF;
    IF NOT FOUND THEN RETURN 'released'; END IF;
    IF cur.holder_id <> p_holder THEN RETURN 'not-holder'; END IF;
    IF cur.token <> p_token OR (p_token >> 40) < {s}.timeline() THEN
        RETURN 'stale-token';
    END IF;
    IF cur.expires_at <= clock_timestamp() THEN RETURN 'expired'; END IF;
    RETURN NULL;
END $$"""

# acquire(name, holder id, replica, host, since, TTL ms, floor, claim allowance ms)
# returns (true, new token) when acquired; (false, the holder's token) when held.
# The tokens row is created, then locked FOR UPDATE: acquirers of one name queue there.
ACQUIRE_FUNCTION = """CREATE OR REPLACE FUNCTION {s}.acquire(
    p_name text, p_holder text, p_replica text, p_host text, p_since text, p_ttl_ms integer,
    p_floor bigint, p_allowance_ms bigint)
RETURNS TABLE (acquired boolean, token bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    tl bigint := {s}.timeline();
    now_ms bigint := {s}.now_ms();
    t record;
    cur record;
    fresh boolean;
    new_token bigint;
BEGIN
    INSERT INTO {s}.tokens (name, last_token, timeline) VALUES (p_name, 0, 0)
        ON CONFLICT (name) DO NOTHING;
    SELECT last_token, timeline, epoch_low, epoch_high INTO t FROM {s}.tokens
        WHERE name = p_name FOR UPDATE;
    SELECT l.token, l.expires_at INTO cur FROM {s}.lease l WHERE l.name = p_name FOR UPDATE;
    IF FOUND AND cur.expires_at > clock_timestamp() THEN
        RETURN QUERY SELECT false, cur.token;
        RETURN;
    END IF;
    fresh := t.last_token = 0 AND t.timeline = 0;
    IF t.last_token < p_floor OR t.timeline < tl AND (NOT fresh OR tl > 1) THEN
        -- Data lost (a restore), a promotion since the row's last acquisition, or a row
        -- new on a promoted server (its old one may be what the promotion lost): any fire
        -- up to now + allowance may have been claimed in what is missing.
        t.epoch_low := 0;
        t.epoch_high := now_ms + p_allowance_ms;
    END IF;
    new_token := greatest(t.last_token + 1, (tl << 40) + 1, p_floor + 1);
    UPDATE {s}.tokens SET last_token = new_token, timeline = greatest(t.timeline, tl),
        epoch_low = t.epoch_low, epoch_high = t.epoch_high WHERE name = p_name;
    INSERT INTO {s}.lease AS l (name, holder_id, token, replica, host, since, ttl_ms,
                                expires_at)
        VALUES (p_name, p_holder, new_token, p_replica, p_host, p_since, p_ttl_ms,
                clock_timestamp() + p_ttl_ms * interval '1 millisecond')
        ON CONFLICT (name) DO UPDATE SET holder_id = excluded.holder_id,
            token = excluded.token, replica = excluded.replica, host = excluded.host,
            since = excluded.since, ttl_ms = excluded.ttl_ms, expires_at = excluded.expires_at;
    RETURN QUERY SELECT true, new_token;
END $$"""

# renew(name, holder id, token, TTL ms) returns 'ok' when extended from the server's now,
# else why not: 'released', 'not-holder', 'stale-token' or 'expired'.
RENEW_FUNCTION = """CREATE OR REPLACE FUNCTION {s}.renew(
    p_name text, p_holder text, p_token bigint, p_ttl_ms integer) RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lost text := {s}.lease_lost(p_name, p_holder, p_token, true);
BEGIN
    IF lost IS NOT NULL THEN RETURN lost; END IF;
    UPDATE {s}.lease SET expires_at = clock_timestamp() + p_ttl_ms * interval '1 millisecond',
        ttl_ms = p_ttl_ms WHERE name = p_name;
    RETURN 'ok';
END $$"""

# release(name, holder id, token) returns true when released (and notifies the channel,
# delivered at commit), false when the lease was not ours.
RELEASE_FUNCTION = (
    """CREATE OR REPLACE FUNCTION {s}.release(
    p_name text, p_holder text, p_token bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    DELETE FROM {s}.lease WHERE name = p_name AND holder_id = p_holder AND token = p_token;
    IF NOT FOUND THEN RETURN false; END IF;
    PERFORM pg_notify('"""
    + CHANNEL
    + """', p_name);
    RETURN true;
END $$"""
)

# claim_many(name, holder id, token, allowance ms, retention limit, most trim candidates
#   per claim, then per run: job, fire key, outcome, attempt, record JSON, trim cutoff)
# returns one row per run, in order: (status, detail) as the Redis claim script's:
#   'claimed' (detail: records trimmed) | 'resent' (detail: the stored record JSON) |
#   'duplicate' ('' or 'may-have-been-claimed': a fire in the epoch);
# or one row ('lost', reason) | ('early', ms until the furthest fire is due), nothing
# written. Trimming is the rule of scheduler.backends.rules: of the count - limit oldest
# records (at most p_scan) fired before the cutoff, the finished ones are deleted.
CLAIM_MANY_FUNCTION = """CREATE OR REPLACE FUNCTION {s}.claim_many(
    p_name text, p_holder text, p_token bigint, p_allowance_ms bigint, p_limit integer,
    p_scan integer, p_jobs text[], p_keys bigint[], p_outcomes text[], p_attempts text[],
    p_records text[], p_cutoffs bigint[])
RETURNS TABLE (status text, detail text)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lost text := {s}.lease_lost(p_name, p_holder, p_token, false);
    now_ms bigint;
    furthest bigint;
    low bigint;
    high bigint;
    cur record;
    excess integer;
    trimmed integer;
BEGIN
    IF lost IS NOT NULL THEN RETURN QUERY SELECT 'lost'::text, lost; RETURN; END IF;
    now_ms := {s}.now_ms();
    SELECT max(k - now_ms - p_allowance_ms) INTO furthest FROM unnest(p_keys) AS k;
    IF furthest > 0 THEN RETURN QUERY SELECT 'early'::text, furthest::text; RETURN; END IF;
    SELECT epoch_low, epoch_high INTO low, high FROM {s}.tokens WHERE name = p_name;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        SELECT r.attempt, r.record INTO cur FROM {s}.runs r
            WHERE r.name = p_name AND r.job = p_jobs[i] AND r.fire_key = p_keys[i];
        IF FOUND THEN
            -- a resend finds its own record, even for a fire in the epoch
            IF p_attempts[i] <> '' AND cur.attempt = p_attempts[i] THEN
                status := 'resent'; detail := cur.record;
            ELSE
                status := 'duplicate'; detail := '';
            END IF;
        ELSIF low IS NOT NULL AND p_keys[i] >= low AND p_keys[i] < high THEN
            status := 'duplicate'; detail := 'may-have-been-claimed';
        ELSE
            INSERT INTO {s}.runs (name, job, fire_key, token, outcome, attempt, record)
                VALUES (p_name, p_jobs[i], p_keys[i], p_token, p_outcomes[i], p_attempts[i],
                        p_records[i]);
            SELECT least(count(*) - p_limit, p_scan) INTO excess FROM {s}.runs r
                WHERE r.name = p_name AND r.job = p_jobs[i];
            trimmed := 0;
            IF excess > 0 THEN
                DELETE FROM {s}.runs d WHERE d.name = p_name AND d.job = p_jobs[i]
                    AND d.outcome IN ('ok', 'error', 'lost')
                    AND d.fire_key IN (
                        SELECT w.fire_key FROM {s}.runs w
                        WHERE w.name = p_name AND w.job = p_jobs[i]
                          AND w.fire_key < p_cutoffs[i]
                        ORDER BY w.fire_key LIMIT excess);
                GET DIAGNOSTICS trimmed = ROW_COUNT;
            END IF;
            status := 'claimed'; detail := trimmed::text;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$"""

# start_many(name, holder id, token, then per run: job, fire key, attempt, started JSON)
# returns one row per run, in order: 'started' | 'gone' | 'other-attempt' | 'not-claimed';
# or one row 'lost:<reason>', nothing started.
START_MANY_FUNCTION = """CREATE OR REPLACE FUNCTION {s}.start_many(
    p_name text, p_holder text, p_token bigint, p_jobs text[], p_keys bigint[],
    p_attempts text[], p_records text[])
RETURNS SETOF text
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    lost text := {s}.lease_lost(p_name, p_holder, p_token, false);
    cur record;
BEGIN
    IF lost IS NOT NULL THEN RETURN NEXT 'lost:' || lost; RETURN; END IF;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        SELECT r.attempt, r.outcome INTO cur FROM {s}.runs r
            WHERE r.name = p_name AND r.job = p_jobs[i] AND r.fire_key = p_keys[i]
            FOR UPDATE;
        IF NOT FOUND THEN
            RETURN NEXT 'gone';
        ELSIF p_attempts[i] = '' OR cur.attempt <> p_attempts[i] THEN
            RETURN NEXT 'other-attempt';
        ELSIF cur.outcome <> 'claimed' THEN
            RETURN NEXT 'not-claimed';
        ELSE
            UPDATE {s}.runs SET outcome = 'running', record = p_records[i]
                WHERE name = p_name AND job = p_jobs[i] AND fire_key = p_keys[i];
            RETURN NEXT 'started';
        END IF;
    END LOOP;
END $$"""

FUNCTIONS = (
    TIMELINE_FUNCTION,
    NOW_MS_FUNCTION,
    LEASE_LOST_FUNCTION,
    ACQUIRE_FUNCTION,
    RENEW_FUNCTION,
    RELEASE_FUNCTION,
    CLAIM_MANY_FUNCTION,
    START_MANY_FUNCTION,
)

#: The functions a replica calls, with their argument types (for GRANT EXECUTE).
SIGNATURES = (
    "timeline()",
    "now_ms()",
    "lease_lost(text, text, bigint, boolean)",
    "acquire(text, text, text, text, text, integer, bigint, bigint)",
    "renew(text, text, bigint, integer)",
    "release(text, text, bigint)",
    "claim_many(text, text, bigint, bigint, integer, integer, text[], bigint[], text[], "
    "text[], text[], bigint[])",
    "start_many(text, text, bigint, text[], bigint[], text[], text[])",
)

#: The tables and what a replica does with each (for GRANT).
TABLE_PRIVILEGES = (
    ("meta", "SELECT"),
    ("tokens", "SELECT, INSERT, UPDATE"),
    ("lease", "SELECT, INSERT, UPDATE, DELETE"),
    ("runs", "SELECT, INSERT, UPDATE, DELETE"),
    ("members", "SELECT, INSERT, UPDATE, DELETE"),
    ("controls", "SELECT, INSERT, UPDATE, DELETE"),
)

# Written last, in the same transaction: a schema with a version row is whole.
VERSION_ROW = (
    "INSERT INTO {s}.meta (key, value) VALUES ('schema_version', "
    f"'{SCHEMA_VERSION}') ON CONFLICT (key) DO NOTHING"
)


def statements(schema: str) -> list[str]:
    """Every DDL statement of the schema named ``schema``, in order (one transaction)."""
    return [part.replace("{s}", schema) for part in (*TABLES, *FUNCTIONS, VERSION_ROW)]


def grants(schema: str, role: str) -> list[str]:
    """The GRANTs a replica's role ``role`` needs on ``schema``, and nothing more."""
    lines = [f"GRANT USAGE ON SCHEMA {schema} TO {role}"]
    lines += [f"GRANT {what} ON {schema}.{table} TO {role}" for table, what in TABLE_PRIVILEGES]
    lines += [f"GRANT EXECUTE ON FUNCTION {schema}.{sig} TO {role}" for sig in SIGNATURES]
    return lines


def script(schema: str, role: str | None = None) -> str:
    """The DDL as one SQL script for a DBA (``baton schema --print-sql``), in a
    transaction, with the GRANTs for ``role`` when given."""
    body = [f"-- Baton schema version {SCHEMA_VERSION} in schema {schema}", "BEGIN;"]
    body += [statement.strip() + ";" for statement in statements(schema)]
    if role is not None:
        body += [f"{line};" for line in grants(schema, role)]
    body.append("COMMIT;")
    return "\n".join(body) + "\n"


__all__ = [
    "CHANNEL",
    "CLAIM_ALLOWANCE_MS",
    "SCHEMA_VERSION",
    "grants",
    "script",
    "statements",
]
