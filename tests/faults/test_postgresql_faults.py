"""The PostgreSQL backend under the faults its users meet: a standby promoted after the
primary died, a stopped server, killed connections, a restarted server, PgBouncer in
transaction pooling mode, a role with only the GRANTs Baton documents, TLS with
verification, and a schema that is missing, newer or not to be created.

Every server is real (tests/harness/postgresql_server.py, tests/harness/pgbouncer.py).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.backends.base import Backend
from scheduler.backends.postgresql import grants, script
from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.states import LossReason
from scheduler.errors import (
    BackendPermanentError,
    BackendSchemaError,
    BackendUnavailable,
    LeaseLost,
)
from scheduler.leadership.lease import Lease
from tests.contract.support import acquire, holder, now_ms, run_for, wait_until
from tests.harness.cli import baton
from tests.harness.pgbouncer import PgBouncer
from tests.harness.postgresql_server import PostgresServer
from tests.harness.redis_server import make_tls_files
from tests.harness.replicas import Cluster
from tests.harness.sink import FencedSink

OP_TIMEOUT = 1.0
RETENTION = Retention(limit=100)


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A server of this test's own, which it may kill."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.cleanup()


# -- failover to an asynchronous standby ------------------------------------------------------


def test_a_promoted_standby_issues_larger_tokens_and_refuses_fires_it_may_have_lost(
    own_server: PostgresServer, opened: Callable[..., Backend], election: str
) -> None:
    """The standby lacks the primary's last acquisition and claim; after its promotion the
    next token still exceeds every token the old primary issued, the old term's renewal is
    refused, and the lost claim's fire is not claimed again (the claim epoch)."""
    primary = own_server
    standby = primary.make_standby()
    try:
        both = (
            f"postgresql://{primary.user}:{primary.password}@127.0.0.1:{primary.port},"
            f"127.0.0.1:{standby.port}/{primary.database}"
        )
        old = opened(both)
        old.preflight(election)
        first = acquire(old, election, holder("r1"), ttl=2.0)
        standby.wait_caught_up()
        standby.stop()  # from here on the standby receives nothing

        old.release(first)
        newest = acquire(old, election, holder("r2"), ttl=2.0)
        lost_fire = now_ms(0.0)
        assert old.claim(newest, run_for(newest, lost_fire), RETENTION) is not None
        issued_before = newest.token
        primary.kill()

        standby.restart()
        standby.promote()

        # The term the standby still knows is from the old timeline: it cannot go on.
        assert wait_until(lambda: _renew_answers(old, first), timeout=10)
        with pytest.raises(LeaseLost) as lost:
            old.renew(first)
        assert lost.value.reason == LossReason.STALE_TOKEN

        fresh = opened(standby.url())
        assert wait_until(lambda: fresh.read(election) is None, timeout=5)
        successor = acquire(fresh, election, holder("r3"), ttl=5.0)
        assert successor.token > issued_before

        # The fire claimed only on the old primary may have run: it is not claimed again.
        assert fresh.claim(successor, run_for(successor, lost_fire), RETENTION) is None
        # A fire after the epoch is claimed as usual.
        later = now_ms(1.3)
        assert wait_until(lambda: later <= datetime.now(UTC) + timedelta(seconds=0.9), timeout=5)
        assert fresh.claim(successor, run_for(successor, later), RETENTION) is not None
    finally:
        standby.cleanup()


def _renew_answers(backend: Backend, lease: Lease) -> bool:
    """Whether a renewal got an answer (either way) rather than no connection."""
    try:
        backend.renew(lease)
    except BackendUnavailable:
        return False
    except LeaseLost:
        return True
    return True


# -- a server that stops answering, connections cut, a restart --------------------------------


def test_a_stopped_server_cannot_hold_a_call_past_op_timeout(
    own_server: PostgresServer, opened: Callable[..., Backend], election: str
) -> None:
    """SIGSTOP the whole server (its TCP stack still acks): the renewal fails within
    op_timeout (the watchdog cuts it), and after SIGCONT the lease renews again."""
    backend = opened(own_server.url(), op_timeout=0.5)
    lease = acquire(backend, election, holder("r1"), ttl=30.0)
    own_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as failed:
            backend.renew(lease)
        took = time.monotonic() - started
    finally:
        own_server.resume()
    assert took < 0.5 + 0.5, f"the call was cut only after {took:.2f} s"
    assert "op_timeout" in str(failed.value)
    assert wait_until(lambda: _renews(backend, lease), timeout=10)


def _renews(backend: Backend, lease: Lease) -> bool:
    try:
        backend.renew(lease)
    except BackendUnavailable:
        return False
    return True


def test_terminated_idle_connections_are_replaced_before_use(
    postgresql_server: PostgresServer, opened: Callable[..., Backend], election: str
) -> None:
    """``pg_terminate_backend`` of the leader's idle connections: noticed before their next
    use and replaced, so the renewal and the read succeed and the lease holds."""
    backend = opened(postgresql_server.url(application_name=f"t-{election[-12:]}"))
    lease = acquire(backend, election, holder("r1"))
    backend.read(election)  # the shared pool's connection exists too
    assert postgresql_server.terminate(f"t-{election[-12:]}") == 2
    assert backend.renew(lease).token == lease.token
    record = backend.read(election)
    assert record is not None and record.token == lease.token


def test_a_killed_and_restarted_server_keeps_the_lease_and_the_runs(
    own_server: PostgresServer, opened: Callable[..., Backend], election: str
) -> None:
    """kill -9 of the server: calls fail as transient meanwhile; after crash recovery the
    lease renews with its token and the claimed fire is still claimed."""
    backend = opened(own_server.url())
    lease = acquire(backend, election, holder("r1"))
    run = run_for(lease, now_ms(0.0))
    assert backend.claim(lease, run, RETENTION) == run
    own_server.kill()
    with pytest.raises(BackendUnavailable):
        backend.renew(lease)
    own_server.restart()
    assert wait_until(lambda: _renews(backend, lease), timeout=10)
    stored = backend.lookup(election, run.job, run.scheduled_time)
    assert stored is not None and stored.attempt == run.attempt


# -- handover -----------------------------------------------------------------------------------


#: Server sessions whose last statement was a LISTEN (a follower waiting for a notification).
_LISTENERS = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN %'"
#: Server sessions whose last statement read the lease (a follower through PgBouncer polls;
#: the one server connection's statement before the wait renewed the lease).
_READERS = "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT replica, host, %'"


def _waits_until_released(
    server: PostgresServer, waiting: str, backend: Backend, other: Backend, name: str, lease: Lease
) -> float:
    """Seconds a follower's 10 s wait took when ``lease`` was released once the follower was
    seen waiting (more server sessions counted by the query ``waiting`` than before it)."""
    before = server.query(waiting)[0][0]
    returned = threading.Event()
    took: list[float] = []

    def follow() -> None:
        started = time.monotonic()
        other.wait_for_change(name, 10.0)
        took.append(time.monotonic() - started)
        returned.set()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    # A release before the follower waits proves nothing: wait until the server sees it.
    assert wait_until(lambda: server.query(waiting)[0][0] > before, timeout=10)
    backend.release(lease)
    assert returned.wait(12)
    thread.join()
    return took[0]


def test_a_release_wakes_a_waiting_follower_at_once_through_listen(
    postgresql_server: PostgresServer, opened: Callable[..., Backend], election: str
) -> None:
    """The follower's 10 s wait ends when the leader releases, not when it runs out."""
    leader = opened(postgresql_server.url())
    follower = opened(postgresql_server.url())
    lease = acquire(leader, election, holder("r1"))
    took = _waits_until_released(postgresql_server, _LISTENERS, leader, follower, election, lease)
    assert took < 5.0, f"the follower waited {took:.2f} s of its 10 s for the release"


# -- PgBouncer ----------------------------------------------------------------------------------


@pytest.fixture
def bouncer(postgresql_server: PostgresServer) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode with one server connection per pool, so every
    client shares it: any session state would leak between them."""
    proxy = PgBouncer(postgresql_server, default_pool_size=1).start()
    try:
        yield proxy
    finally:
        proxy.cleanup()


def test_a_whole_term_works_through_pgbouncer_in_transaction_mode(
    bouncer: PgBouncer,
    postgresql_server: PostgresServer,
    opened: Callable[..., Backend],
    election: str,
) -> None:
    """Acquire, claim, start, finish, renew, presence, controls and release through
    PgBouncer (pgbouncer=true), two replicas sharing one server connection; the follower,
    polling, sees the release long before its wait runs out."""
    first = opened(bouncer.url(pgbouncer="true"))
    second = opened(bouncer.url(pgbouncer="true"))
    first.preflight(election)
    lease = acquire(first, election, holder("r1"))
    assert second.try_acquire(election, holder("r2"), 30.0) is None
    run = run_for(lease, now_ms(0.0))
    assert first.claim_many(lease, [run], RETENTION) == [run]
    [started] = first.start_many(lease, [run.started_now(datetime.now(UTC))])
    assert isinstance(started, RunRecord)
    first.finish_many(election, [started.finished("ok", datetime.now(UTC))])
    assert [r.outcome for r in second.history(election, "job", 5)] == ["ok"]
    first.set_control(election, "pause:job", "x")
    assert second.controls(election) == {"pause:job": "x"}
    lease = first.renew(lease)
    took = _waits_until_released(postgresql_server, _READERS, first, second, election, lease)
    assert took < 5.0, f"the polling follower waited {took:.2f} s of its 10 s for the release"
    assert second.try_acquire(election, holder("r2"), 30.0) is not None


def test_pgbouncer_without_the_option_is_one_clear_permanent_error(
    bouncer: PgBouncer, opened: Callable[..., Backend]
) -> None:
    """Baton's startup options are refused by PgBouncer: the error names the fix."""
    backend = opened(bouncer.url())
    with pytest.raises(BackendPermanentError, match="pgbouncer=true"):
        backend.check()


# -- least privilege, TLS, the schema ---------------------------------------------------------


def test_a_role_with_only_the_documented_grants_runs_a_whole_term(
    postgresql_server: PostgresServer, opened: Callable[..., Backend], election: str
) -> None:
    """The schema applied by its owner from ``baton schema --print-sql``; a role with only
    the printed GRANTs passes the preflight and runs a term; one GRANT fewer is named by
    the preflight."""
    schema = f"s{election[-12:]}".lower()
    postgresql_server.execute(script(schema), db=postgresql_server.database)
    least = f"least_{schema}"
    url = postgresql_server.create_role(least, "pw-least", grants(schema, least))
    backend = opened(f"{url}?schema={schema}&create_schema=false")
    backend.preflight(election)
    lease = acquire(backend, election, holder("r1"))
    run = run_for(lease, now_ms(0.0))
    assert backend.claim(lease, run, RETENTION) == run
    backend.start(lease, run.started_now(datetime.now(UTC)))
    backend.finish(election, run.finished("ok", datetime.now(UTC)))
    backend.release(lease)

    postgresql_server.execute(f"REVOKE DELETE ON {schema}.runs FROM {least}")
    with pytest.raises(BackendPermanentError, match=f"DELETE on table {schema}.runs"):
        opened(f"{url}?schema={schema}&create_schema=false").preflight(election)


def test_a_missing_schema_is_not_created_when_creation_is_off(
    postgresql_server: PostgresServer, opened: Callable[..., Backend], election: str
) -> None:
    """create_schema=false on an empty schema: a schema error naming the fix; nothing is
    created."""
    schema = f"m{election[-12:]}".lower()
    backend = opened(postgresql_server.url(schema=schema, create_schema="false"))
    with pytest.raises(BackendSchemaError, match="baton schema --print-sql"):
        backend.preflight(election)
    found = postgresql_server.query(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
    )
    assert found[0][0] == 0


def test_a_newer_schema_version_is_refused(
    postgresql_server: PostgresServer, opened: Callable[..., Backend], election: str
) -> None:
    """A schema written by a newer Baton is never used silently."""
    schema = f"n{election[-12:]}".lower()
    opened(postgresql_server.url(schema=schema)).preflight(election)
    postgresql_server.execute(f"UPDATE {schema}.meta SET value = '99'")
    with pytest.raises(BackendSchemaError, match="newer than this Baton supports"):
        opened(postgresql_server.url(schema=schema)).check()


def test_tls_with_verification_connects_and_a_wrong_ca_is_refused(
    tmp_path: Path, opened: Callable[..., Backend], election: str
) -> None:
    """sslmode=verify-full with the server's CA works; with another CA it fails (a
    server it cannot verify is never used)."""
    (tmp_path / "tls").mkdir()
    (tmp_path / "other").mkdir()
    tls = make_tls_files(tmp_path / "tls")
    other = make_tls_files(tmp_path / "other")
    server = PostgresServer(settings={"ssl": "on"}, tls=tls).start()
    try:
        url = server.url(host="localhost", sslmode="verify-full", sslrootcert=str(tls.ca_cert))
        opened(url).preflight(election)
        wrong = server.url(host="localhost", sslmode="verify-full", sslrootcert=str(other.ca_cert))
        with pytest.raises(BackendUnavailable, match="certificate"):
            opened(wrong).check()
    finally:
        server.cleanup()


def test_replicas_follow_a_promotion_with_a_larger_token_and_no_tick_twice(
    own_server: PostgresServer, tmp_path: Path, election: str
) -> None:
    """Two ``baton run`` replicas on a primary and its streaming standby (both hosts in
    the URL); the primary is killed while a replica leads and the standby promoted: a
    replica leads again on the new timeline with a larger token, and every tick in the
    history ran once."""
    primary = own_server
    standby = primary.make_standby()
    both = (
        f"postgresql://{primary.user}:{primary.password}@127.0.0.1:{primary.port},"
        f"127.0.0.1:{standby.port}/{primary.database}"
    )
    cluster = Cluster(both, election, tmp_path / "cluster", env={"BATON_TEST_EVERY": "1s"})
    try:
        cluster.start(2, lease_ttl=2)
        first = cluster.wait_leader(20)
        assert wait_until(lambda: len(cluster.observer_history("test.tick", 10)) >= 2, 20)
        standby.wait_caught_up()
        primary.kill()
        standby.promote()
        second = cluster.wait_leader(30, not_token=first.token)
        assert second.token > first.token
        assert second.token >> 40 > first.token >> 40, "the token folds the new timeline"
        assert wait_until(
            lambda: any(r.token == second.token for r in cluster.observer_history("test.tick", 10)),
            20,
        ), cluster.dump_logs()
        sink = FencedSink(cluster.sink_path)
        try:
            started = [w.tick for w in sink.writes() if w.phase == "start"]
        finally:
            sink.close()
        assert started and len(started) == len(set(started)), "a tick ran twice"
    finally:
        cluster.close()
        standby.cleanup()


@pytest.mark.parametrize("command", ["run", "leader", "schema"])
def test_commands_on_a_schema_not_to_be_created_exit_2_with_one_line(
    postgresql_server: PostgresServer, tmp_path: Path, election: str, command: str
) -> None:
    """``create_schema=false`` and no schema: ``baton run`` (and the read commands) exit 2
    with one line naming the fix, the password redacted; nothing is created."""
    schema = f"c{election[-12:]}".lower()
    url = postgresql_server.url(schema=schema, create_schema="false")
    (tmp_path / "myjobs.py").write_text(
        "from scheduler import singleton_job\n\n"
        "@singleton_job(every='1s', name='t.tick')\ndef tick(ctx): ...\n"
    )
    jobs = ("--jobs", "myjobs") if command == "run" else ()
    done = baton(command, "--backend", url, *jobs, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "baton schema --print-sql" in lines[0], done.stderr
    assert postgresql_server.password not in done.stderr + done.stdout
    found = postgresql_server.query(
        "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
    )
    assert found[0][0] == 0
