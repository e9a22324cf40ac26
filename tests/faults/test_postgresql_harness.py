"""The PostgreSQL test harness itself: a real cluster, a standby, PgBouncer, on loopback.

The backend's contract and fault tests trust these servers to be what they claim (data that
survives kill -9, a standby that streams and promotes to a new timeline, PgBouncer really in
transaction mode); these tests pin that, each against a real process.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from tests.harness.pgbouncer import PgBouncer
from tests.harness.postgresql_server import PostgresServer


def _table() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fresh_server() -> Iterator[PostgresServer]:
    """A cluster of the test's own, for tests that kill or clone it."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.cleanup()


def test_app_url_connects_as_the_owner_of_its_database(postgresql_server: PostgresServer) -> None:
    """The default URL logs in (SCRAM) as ``baton``, which may create tables in ``baton``."""
    url = postgresql_server.url()
    assert url == f"postgresql://baton:secret@127.0.0.1:{postgresql_server.port}/baton"
    table = _table()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT current_user, current_database(), current_setting('listen_addresses'), "
            "current_setting('wal_level'), (SELECT rolsuper FROM pg_roles "
            "WHERE rolname = current_user)"
        ).fetchone()
        assert row == ("baton", "baton", "127.0.0.1", "replica", False)
        # In public: a schema named after the role (Baton's default, "baton", made by the
        # backend's tests on this shared server) would come first in its search_path.
        conn.execute(f"CREATE TABLE public.{table} (x int)")
    assert postgresql_server.query(f"SELECT count(*) FROM public.{table}") == [(0,)]


def test_wrong_password_is_refused(postgresql_server: PostgresServer) -> None:
    """TCP logins check the password (no trust auth on the port the backend uses)."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgresql_server.url(password="wrong")).close()


def test_limited_role_has_only_its_grants(postgresql_server: PostgresServer) -> None:
    """``create_role`` gives a login with exactly the GRANTs passed, nothing more."""
    table = _table()
    role = f"limited_{uuid.uuid4().hex[:8]}"
    postgresql_server.execute(f"CREATE TABLE {table} (x int)")
    url = postgresql_server.create_role(role, "pw'\"x", [f"GRANT SELECT ON {table} TO {role}"])
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"INSERT INTO {table} VALUES (1)")


def test_terminate_by_application_name_drops_that_connection(
    postgresql_server: PostgresServer,
) -> None:
    """``terminate`` ends the named backend; its client's next statement fails."""
    name = f"victim-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgresql_server.url(application_name=name), autocommit=True) as conn:
        conn.execute("SELECT 1")
        assert postgresql_server.terminate(name) == 1
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert postgresql_server.terminate(name) == 0


def test_kill_then_restart_recovers_committed_rows(fresh_server: PostgresServer) -> None:
    """SIGKILL takes the whole server down; a restart on the same port runs crash recovery."""
    port, pid = fresh_server.port, fresh_server.pid
    fresh_server.execute("CREATE TABLE survivors (x int)")
    fresh_server.execute("INSERT INTO survivors VALUES (1), (2)")
    backend = fresh_server.connect()
    fresh_server.kill()
    assert not fresh_server.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(psycopg.OperationalError):
        backend.execute("SELECT 1")
    backend.close()
    fresh_server.restart()
    assert fresh_server.port == port and fresh_server.pid != pid
    assert fresh_server.query("SELECT x FROM survivors ORDER BY x") == [(1,), (2,)]
    assert "automatic recovery in progress" in fresh_server.log_path.read_text()


def test_stop_then_restart_is_a_clean_shutdown(fresh_server: PostgresServer) -> None:
    """``stop`` is a fast shutdown even with a client connected; no recovery on restart."""
    fresh_server.execute("CREATE TABLE kept (x int)")
    with fresh_server.connect():
        fresh_server.stop()
    fresh_server.restart()
    assert fresh_server.query("SELECT count(*) FROM kept") == [(0,)]
    assert "automatic recovery in progress" not in fresh_server.log_path.read_text()


def test_standby_streams_then_promotes_to_a_new_timeline(fresh_server: PostgresServer) -> None:
    """A ``pg_basebackup`` standby replays the primary's writes, then promotes on timeline+1."""
    fresh_server.execute("CREATE TABLE replicated (x int)")
    standby = fresh_server.make_standby()
    try:
        assert standby.port != fresh_server.port
        assert standby.in_recovery and not fresh_server.in_recovery
        assert standby.system_identifier == fresh_server.system_identifier
        timeline = fresh_server.timeline_id
        assert standby.timeline_id == timeline

        fresh_server.execute("INSERT INTO replicated VALUES (42)")
        standby.wait_caught_up()
        assert standby.query("SELECT x FROM replicated") == [(42,)]
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            standby.execute("INSERT INTO replicated VALUES (1)")

        standby.promote()
        assert not standby.in_recovery
        assert standby.timeline_id == timeline + 1
        assert standby.system_identifier == fresh_server.system_identifier
        standby.execute("INSERT INTO replicated VALUES (43)")
        assert standby.query("SELECT x FROM replicated ORDER BY x") == [(42,), (43,)]
    finally:
        standby.cleanup()


def test_pgbouncer_pools_in_transaction_mode(postgresql_server: PostgresServer) -> None:
    """Through PgBouncer, two open clients share one server backend: transaction pooling."""
    bouncer = PgBouncer(postgresql_server, default_pool_size=1).start()
    try:
        assert bouncer.show_config()["pool_mode"] == "transaction"
        url = bouncer.url()
        assert url == f"postgresql://baton:secret@127.0.0.1:{bouncer.port}/baton"
        with (
            psycopg.connect(url, autocommit=True) as first,
            psycopg.connect(url, autocommit=True) as second,
        ):
            pid = first.execute("SELECT pg_backend_pid()").fetchone()
            assert second.execute("SELECT pg_backend_pid()").fetchone() == pid
            assert first.execute("SELECT current_user").fetchone() == ("baton",)
        pools = bouncer.admin("SHOW POOLS")
        assert any(row[0] == "baton" and row[1] == "baton" for row in pools)
    finally:
        bouncer.cleanup()


def test_pgbouncer_follows_a_server_restart_and_new_users(fresh_server: PostgresServer) -> None:
    """After kill -9 and restart of the server, PgBouncer reconnects; added users log in."""
    bouncer = PgBouncer(fresh_server).start()
    try:
        url = fresh_server.create_role(
            "late", "late-pw", ["GRANT CONNECT ON DATABASE baton TO late"]
        )
        assert url.startswith("postgresql://late:late-pw@")
        bouncer.add_user("late", "late-pw")
        fresh_server.kill()
        fresh_server.restart()
        with bouncer.connect(user="late") as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("late",)
        pid = bouncer.pid
        bouncer.kill()
        assert not bouncer.running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        bouncer.cleanup()
