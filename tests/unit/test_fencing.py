"""Fencing guards refuse stale tokens atomically with the write they protect."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from scheduler.fencing import RedisFence, SqlFence, StaleFencingToken
from tests.harness.redis_server import RedisServer


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    yield client
    client.close()


def test_redis_fence_accepts_rising_and_equal_tokens_refuses_lower(
    redis_client: redis.Redis, election: str
) -> None:
    """Equal or higher tokens write; a lower one raises and writes nothing."""
    fence = RedisFence(redis_client, prefix=f"{election}:fence:")
    fence.set("ledger", 5, f"{election}:v", "a")
    fence.set("ledger", 5, f"{election}:v", "b")
    fence.set("ledger", 9, f"{election}:v", "c")
    with pytest.raises(StaleFencingToken) as info:
        fence.set("ledger", 8, f"{election}:v", "stale")
    assert (info.value.token, info.value.highest) == (8, 9)
    assert redis_client.get(f"{election}:v") == "c"
    fence.check("other", 1)  # resources are independent


def test_redis_fence_compares_huge_tokens_exactly(redis_client: redis.Redis, election: str) -> None:
    """Tokens beyond 2^53 (where Lua numbers round) still compare exactly."""
    fence = RedisFence(redis_client, prefix=f"{election}:fence:")
    big = 2**60
    fence.check("r", big + 1)
    with pytest.raises(StaleFencingToken):
        fence.check("r", big)
    fence.check("r", big * 10)


def test_sql_fence_on_sqlite_rolls_back_stale_writer(tmp_path: Path) -> None:
    """A stale token fails its check; the transaction's own write is rolled back with it."""
    db = sqlite3.connect(tmp_path / "sink.db", isolation_level=None)
    fence = SqlFence()
    fence.create_table(db.cursor())
    db.execute("CREATE TABLE ledger (entry TEXT)")

    def write(token: int, entry: str) -> None:
        cur = db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            fence.check(cur, "ledger", token)
            cur.execute("INSERT INTO ledger VALUES (?)", (entry,))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    write(3, "first leader")
    write(7, "second leader")
    with pytest.raises(StaleFencingToken, match="fencing token 3 refused, 7 already accepted"):
        write(3, "first leader, after a pause")
    assert [r[0] for r in db.execute("SELECT entry FROM ledger")] == [
        "first leader",
        "second leader",
    ]


def test_sql_fence_serialises_concurrent_writers(tmp_path: Path) -> None:
    """Many threads with shuffled tokens: the committed marks only ever rise."""
    path = tmp_path / "sink.db"
    setup = sqlite3.connect(path, isolation_level=None)
    SqlFence().create_table(setup.cursor())
    setup.execute("CREATE TABLE ledger (token INTEGER)")
    setup.close()
    tokens = [7, 3, 9, 1, 12, 5, 12, 2, 15, 11]

    def worker(token: int) -> None:
        db = sqlite3.connect(path, isolation_level=None, timeout=10)
        cur = db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            SqlFence().check(cur, "ledger", token)
            cur.execute("INSERT INTO ledger VALUES (?)", (token,))
            cur.execute("COMMIT")
        except StaleFencingToken:
            cur.execute("ROLLBACK")
        db.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    db = sqlite3.connect(path)
    committed = [r[0] for r in db.execute("SELECT token FROM ledger ORDER BY rowid")]
    assert committed == sorted(committed) and committed[-1] == max(tokens)


def test_sql_fence_refuses_unsafe_table_names() -> None:
    """The table name goes into SQL text, so only identifiers are allowed."""
    with pytest.raises(ValueError):
        SqlFence(table="x; DROP TABLE y")
