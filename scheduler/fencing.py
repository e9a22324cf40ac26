"""Fencing guards: make a sink refuse writes from a deposed leader.

A lease alone cannot stop a leader that was paused past its TTL from finishing a write after
a new leader started: the classic lock failure. The cure is a fencing token checked by the
sink. Every Baton fire carries ``ctx.fencing_token``, strictly increasing per leadership
term; a sink that remembers the highest token it accepted per resource and refuses lower
ones is safe whatever the timing.

Each guard here keeps that high-water mark *atomically with the write it protects*:

* :class:`RedisFence` — a Lua script compares, records and writes in one step;
* :class:`SqlFence` — a conditional UPSERT of the mark inside the caller's transaction, so
  the mark and the caller's own writes commit (or roll back) together;
* HTTP — send ``Fencing-Token: <token>``; the server keeps the mark per resource and answers
  ``409 Conflict`` to a lower token (see the README).

A stale token raises :class:`StaleFencingToken`; equal tokens are accepted (one leader's
several writes during one term).
"""

from __future__ import annotations

from typing import Any, Protocol

from scheduler.errors import BatonError


class StaleFencingToken(BatonError, ValueError):
    """A write carried a token lower than one the resource already accepted.

    Attributes:
        resource: the guarded resource.
        token: the refused token.
        highest: the highest token the resource has accepted.
    """

    def __init__(self, resource: str, token: int, highest: int) -> None:
        self.resource = resource
        self.token = token
        self.highest = highest
        super().__init__(
            f"resource {resource!r}: fencing token {token} refused, {highest} already accepted "
            "(a newer leader has written; this replica's lease is gone)"
        )


# KEYS[1] = the fence key (highest token accepted for the resource)
# KEYS[2] = the key to write (optional; absent for a bare check)
# ARGV[1] = the writer's fencing token (integer, decimal string)
# ARGV[2] = the value to SET at KEYS[2] (when KEYS[2] is given)
# ARGV[3] = expiry of KEYS[2] in ms, or "0" for none
# returns {1, token} if accepted (and written), {0, highest} if the token is stale
FENCED_SET = """
local highest = redis.call('GET', KEYS[1])
local token = ARGV[1]
if highest and #highest > #token or (highest and #highest == #token and highest > token) then
    return {0, highest}
end
redis.call('SET', KEYS[1], token)
if KEYS[2] then
    if ARGV[3] ~= '0' then
        redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
    else
        redis.call('SET', KEYS[2], ARGV[2])
    end
end
return {1, token}
"""
# Tokens are compared as decimal strings (length first, then lexically): exact for any
# size, where Lua numbers lose precision above 2^53.


class _RedisClient(Protocol):
    def register_script(self, script: str) -> Any: ...


class RedisFence:
    """High-water-mark guard in Redis; the check and the write are one Lua script.

    Args:
        client: a ``redis.Redis`` client (any database; not necessarily Baton's backend).
        prefix: key prefix of the fence marks.
    """

    def __init__(self, client: _RedisClient, prefix: str = "baton:fence:") -> None:
        self._script = client.register_script(FENCED_SET)
        self._prefix = prefix

    def check(self, resource: str, token: int) -> None:
        """Record ``token`` for ``resource``, or raise if a higher one was accepted.

        Only as safe as what follows it: prefer :meth:`set`, which writes in the same step.

        Raises:
            StaleFencingToken: ``token`` is lower than the resource's mark.
        """
        self._run(resource, token, [])

    def set(self, resource: str, token: int, key: str, value: str | bytes, px: int = 0) -> None:
        """``SET key value`` only if ``token`` is not stale for ``resource``, atomically.

        Raises:
            StaleFencingToken: ``token`` is lower than the resource's mark; nothing written.
        """
        self._run(resource, token, [key], value, px)

    def _run(
        self, resource: str, token: int, keys: list[str], value: str | bytes = "", px: int = 0
    ) -> None:
        if token < 0:
            raise ValueError("fencing tokens are non-negative integers")
        accepted, highest = self._script(
            keys=[self._prefix + resource, *keys], args=[str(token), value, str(px)]
        )
        if not int(accepted):
            raise StaleFencingToken(resource, token, int(highest))


class SqlFence:
    """High-water-mark guard for a DB-API database, inside the caller's own transaction.

    Create the table once (:meth:`create_table`), then in every transaction that writes on
    behalf of a job call :meth:`check` *before* the writes and commit as usual. The UPSERT
    takes the row lock (PostgreSQL) or the write lock (SQLite) until commit, so concurrent
    writers with different tokens serialise and a stale one fails its check. Works with the
    ``qmark`` (sqlite3) and ``format``/``pyformat`` (psycopg) parameter styles; needs
    ``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE`` (SQLite >= 3.24, PostgreSQL >= 9.5).

    Args:
        table: name of the fence table (trusted: never user input).
        paramstyle: the driver's ``paramstyle`` (``qmark``, ``format`` or ``pyformat``).
    """

    def __init__(self, table: str = "baton_fence", paramstyle: str = "qmark") -> None:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"bad fence table name {table!r}")
        if paramstyle not in ("qmark", "format", "pyformat"):
            raise ValueError(f"unsupported paramstyle {paramstyle!r}")
        mark = "?" if paramstyle == "qmark" else "%s"
        self.table = table
        self._upsert = (
            f"INSERT INTO {table} (resource, token) VALUES ({mark}, {mark}) "
            f"ON CONFLICT (resource) DO UPDATE SET token = excluded.token "
            f"WHERE {table}.token <= excluded.token"
        )
        self._select = f"SELECT token FROM {table} WHERE resource = {mark}"

    def create_table(self, cursor: Any) -> None:
        """Create the fence table if it does not exist."""
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} "
            "(resource VARCHAR(255) PRIMARY KEY, token BIGINT NOT NULL)"
        )

    def check(self, cursor: Any, resource: str, token: int) -> None:
        """Raise the mark of ``resource`` to ``token`` in the current transaction, or refuse.

        Raises:
            StaleFencingToken: a higher token was committed before; roll back the transaction.
        """
        cursor.execute(self._upsert, (resource, token))
        if cursor.rowcount == 0:
            cursor.execute(self._select, (resource,))
            row = cursor.fetchone()
            raise StaleFencingToken(resource, token, int(row[0]) if row else -1)
