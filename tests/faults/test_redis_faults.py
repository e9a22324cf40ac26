"""Redis-specific faults on real redis-server processes: data loss, auth, outages, TLS config.

Each test that breaks a server gets its own (``own_redis``), so the shared session server
of the contract suite is never disturbed.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.backends import LeaseBackend, from_url
from scheduler.backends.runs import Retention, RunRecord
from scheduler.errors import (
    BackendAuthError,
    BackendUnavailable,
    ConfigError,
    FireNotDue,
    LeaseLost,
)
from scheduler.leadership.lease import Holder, Lease
from tests.contract.support import wait_until
from tests.harness.redis_server import HOST, RedisServer, free_port, make_tls_files

OP_TIMEOUT = 0.5
PASSWORD = "correct-horse-battery"


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server for this test alone, free to be killed and restarted."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def secured_redis() -> Iterator[RedisServer]:
    """A redis-server with ``requirepass``."""
    server = RedisServer(password=PASSWORD).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A TLS-only redis-server whose certificate, from a test CA, names ``localhost`` only."""
    server = RedisServer(tls=make_tls_files(tmp_path)).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def open_backend() -> Iterator[Callable[[str], LeaseBackend]]:
    """Open backends with a short op_timeout; all closed at teardown."""
    opened: list[LeaseBackend] = []

    def make(url: str) -> LeaseBackend:
        backend = from_url(url, op_timeout=OP_TIMEOUT)
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


def acquire(backend: LeaseBackend, name: str, replica: str = "r1") -> Lease:
    lease = backend.try_acquire(name, Holder.new(replica, host="test"), 30.0)
    assert lease is not None
    return lease


# --- data loss -----------------------------------------------------------------------------


def test_tokens_increase_after_kill_and_restart(
    own_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """After kill -9 wiped the counter, tokens still rise for old and brand-new backends."""
    witness = open_backend(own_redis.url)
    first = acquire(witness, election)

    own_redis.kill()
    own_redis.restart()
    assert own_redis.client().dbsize() == 0, "the restarted server still has data"

    second = acquire(witness, election)
    assert second.token > first.token

    own_redis.kill()
    own_redis.restart()
    newcomer = open_backend(own_redis.url)
    third = acquire(newcomer, election, "r2")
    assert third.token > second.token


def test_floor_carries_tokens_past_data_loss_when_server_clock_is_behind(
    own_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """Tokens above the server clock are exact (+1) and survive data loss via the floor."""
    backend = open_backend(own_redis.url)
    counter = 2**52 + 12_345  # far above TIME in microseconds, still exact in a double
    own_redis.client().set(f"baton:{{{election}}}:token", counter)

    first = acquire(backend, election)
    assert first.token == counter + 1
    backend.release(first)
    assert acquire(backend, election).token == counter + 2

    own_redis.kill()
    own_redis.restart()
    assert acquire(backend, election).token == counter + 3


def test_stale_lease_after_data_loss_is_lost(
    own_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """After a restart that lost the lease, the old lease can neither renew nor claim."""
    backend = open_backend(own_redis.url)
    lease = acquire(backend, election)
    own_redis.kill()
    own_redis.restart()

    with pytest.raises(LeaseLost):
        backend.renew(lease)
    run = RunRecord("job", datetime(2026, 1, 1, tzinfo=UTC), "r1", lease.token, datetime.now(UTC))
    with pytest.raises(LeaseLost):
        backend.claim(lease, run, Retention())


# --- authentication -------------------------------------------------------------------------


def test_wrong_password_raises_auth_error_naming_backend(
    secured_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """A wrong password raises BackendAuthError naming the redacted URL, never the password."""
    url = f"redis://:wrong-password@{HOST}:{secured_redis.port}/0"
    backend = open_backend(url)

    with pytest.raises(BackendAuthError) as caught:
        backend.check()
    message = str(caught.value)
    assert f"redis://:***@{HOST}:{secured_redis.port}/0" in message
    assert "authentication failed" in message
    assert "wrong-password" not in message
    assert "wrong-password" not in repr(caught.value.__cause__)

    with pytest.raises(BackendAuthError):
        backend.try_acquire(election, Holder.new("r1"), 30.0)


def test_missing_password_raises_auth_error(
    secured_redis: RedisServer, open_backend: Callable[[str], LeaseBackend]
) -> None:
    """No password for a requirepass server (NOAUTH) is an authentication error too."""
    backend = open_backend(f"redis://{HOST}:{secured_redis.port}/0")
    with pytest.raises(BackendAuthError, match="authentication failed"):
        backend.check()


def test_right_password_works(
    secured_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """The right password passes check() and the lease calls; the URL shown hides it."""
    backend = open_backend(secured_redis.url)
    backend.check()
    acquire(backend, election)
    assert PASSWORD not in backend.url


def test_acl_denied_command_raises_auth_error(
    own_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """A Redis ACL user without script permissions gets BackendAuthError, not a retry loop."""
    own_redis.client().acl_setuser(
        "pinger", enabled=True, passwords=["+pinger-pw"], keys=["*"], commands=["+ping"]
    )
    backend = open_backend(f"redis://pinger:pinger-pw@{HOST}:{own_redis.port}/0")
    backend.check()
    with pytest.raises(BackendAuthError, match="permission"):
        backend.try_acquire(election, Holder.new("r1"), 30.0)


# --- outages -------------------------------------------------------------------------------


def test_unreachable_port_fails_within_op_timeout(
    open_backend: Callable[[str], LeaseBackend],
) -> None:
    """Nothing listening: BackendUnavailable naming the backend, within op_timeout."""
    url = f"redis://{HOST}:{free_port()}/0"
    backend = open_backend(url)
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        backend.check()
    assert time.monotonic() - started < OP_TIMEOUT + 2.0
    assert url in str(caught.value)


def test_silent_server_fails_within_op_timeout_without_retrying(
    open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """A peer that never answers fails the call within its bound, with no hidden retries."""
    accepted: list[socket.socket] = []
    stop = threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind((HOST, 0))
        silent.listen(8)
        silent.settimeout(0.05)

        def accept_and_ignore() -> None:
            while not stop.is_set():
                try:
                    accepted.append(silent.accept()[0])
                except TimeoutError:
                    continue

        acceptor = threading.Thread(target=accept_and_ignore, daemon=True)
        acceptor.start()
        try:
            backend = open_backend(f"redis://{HOST}:{silent.getsockname()[1]}/0")
            started = time.monotonic()
            with pytest.raises(BackendUnavailable):
                backend.try_acquire(election, Holder.new("r1"), 30.0)
            elapsed = time.monotonic() - started
        finally:
            stop.set()
            acceptor.join(timeout=5.0)
            for conn in accepted:
                conn.close()

    # connect + one reply, each bounded by op_timeout
    assert elapsed < 2 * OP_TIMEOUT + 2.0
    assert len(accepted) == 1, f"{len(accepted)} connections: the call was retried"


def test_stopped_redis_is_unavailable_then_recovers(
    own_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """Calls raise BackendUnavailable while Redis is down; the same object works after restart."""
    backend, releaser = open_backend(own_redis.url), open_backend(own_redis.url)
    lease = acquire(backend, election)
    backend.wait_for_change(election, 0.05)  # subscribe the pub/sub connection before the outage
    run = RunRecord("job", datetime(2026, 1, 1, tzinfo=UTC), "r1", lease.token, datetime.now(UTC))

    own_redis.stop()
    calls: list[Callable[[], object]] = [
        backend.check,
        lambda: backend.try_acquire(election, Holder.new("r2"), 30.0),
        lambda: backend.renew(lease),
        lambda: backend.release(lease),
        lambda: backend.read(election),
        lambda: backend.claim(lease, run, Retention()),
        lambda: backend.finish(election, run),
        lambda: backend.history(election, "job", 10),
        lambda: backend.claimed(election, "job", run.scheduled_time, run.scheduled_time),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            call()
        assert time.monotonic() - started < OP_TIMEOUT + 2.0

    for _ in range(2):  # the first wait loses its subscription, the second cannot subscribe
        started = time.monotonic()
        backend.wait_for_change(election, 0.4)
        assert 0.3 <= time.monotonic() - started < 2.0, "wait_for_change must wait out errors"

    own_redis.restart()
    backend.check()
    new_lease = backend.try_acquire(election, Holder.new("r2"), 30.0)
    assert new_lease is not None and new_lease.token > lease.token
    # Redis lost its data (no persistence): a fire from before may have been claimed then.
    assert backend.claim(new_lease, run, Retention()) is None
    assert claim_when_due(backend, new_lease, due_now(new_lease)) is not None

    woke = threading.Event()
    waiter = threading.Thread(
        target=lambda: (backend.wait_for_change(election, 10.0), woke.set()), daemon=True
    )
    waiter.start()
    client = own_redis.client()
    channel = f"baton:{{{election}}}:events"
    assert wait_until(lambda: client.pubsub_numsub(channel)[0][1] > 0, 5.0), "never resubscribed"
    releaser.release(new_lease)
    assert woke.wait(2.0), "a release after the restart did not wake the follower"


def test_full_server_is_unavailable_not_fatal(
    own_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """A Redis refusing writes (maxmemory reached) is BackendUnavailable, and recovers."""
    backend = open_backend(own_redis.url)
    client = own_redis.client()
    client.config_set("maxmemory", "1")
    try:
        with pytest.raises(BackendUnavailable, match="OutOfMemory"):
            backend.try_acquire(election, Holder.new("r1"), 30.0)
    finally:
        client.config_set("maxmemory", "0")
    acquire(backend, election)


def test_wait_for_change_survives_server_death_mid_wait(
    own_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """Redis dying during a wait neither raises nor cuts the wait short."""
    backend = open_backend(own_redis.url)
    outcome: list[object] = []

    def wait() -> None:
        started = time.monotonic()
        try:
            backend.wait_for_change(election, 1.5)
            outcome.append(time.monotonic() - started)
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    client = own_redis.client()
    channel = f"baton:{{{election}}}:events"
    assert wait_until(lambda: client.pubsub_numsub(channel)[0][1] > 0, 5.0)
    own_redis.kill()
    waiter.join(timeout=5.0)

    assert len(outcome) == 1 and isinstance(outcome[0], float), outcome
    assert 1.2 <= outcome[0] < 3.0


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "ssl_cert_reqs=none",
        "ssl_cert_reqs=optional",
        "ssl_cert_reqs=CERT_NONE",
        "ssl_check_hostname=false",
        "ssl_check_hostname=no",
        "ssl_cert_reqs=required&ssl_cert_reqs=none",
    ],
)
def test_rediss_refuses_disabled_verification(query: str) -> None:
    """rediss:// URLs that turn certificate or host name checks off are refused."""
    with pytest.raises(ConfigError) as caught:
        from_url(f"rediss://:tls-secret@redis.example:6380/0?{query}", op_timeout=OP_TIMEOUT)
    assert caught.value.key == "backend"
    assert "tls-secret" not in str(caught.value)


@pytest.mark.parametrize("option", ["socket_timeout=60", "retry_on_timeout=true"])
def test_url_cannot_override_timeouts(option: str) -> None:
    """Query options that would unbound calls or add retries are refused."""
    with pytest.raises(ConfigError, match="op_timeout"):
        from_url(f"redis://{HOST}:6379/0?{option}", op_timeout=OP_TIMEOUT)


def test_rediss_url_opens_with_verification_and_redacts_password() -> None:
    """A plain rediss:// URL opens (lazily) with verification on and the password hidden."""
    backend = from_url("rediss://:tls-secret@redis.example:6380/0", op_timeout=OP_TIMEOUT)
    try:
        assert backend.url == "rediss://:***@redis.example:6380/0"
    finally:
        backend.close()


def test_rediss_with_trusted_ca_works(
    tls_redis: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """rediss:// to a server whose certificate chains to the given CA and names the host."""
    backend = open_backend(tls_redis.url)
    backend.check()
    acquire(backend, election)


def test_rediss_rejects_untrusted_certificate(
    tls_redis: RedisServer, open_backend: Callable[[str], LeaseBackend]
) -> None:
    """Without the test CA the certificate is not trusted: no connection, no silent fallback."""
    backend = open_backend(f"rediss://localhost:{tls_redis.port}/0")
    with pytest.raises(BackendUnavailable, match="certificate verify failed"):
        backend.check()


def test_rediss_checks_host_name(
    tls_redis: RedisServer, open_backend: Callable[[str], LeaseBackend]
) -> None:
    """A trusted certificate for another host name (localhost, not 127.0.0.1) is refused."""
    assert tls_redis.tls is not None
    backend = open_backend(
        f"rediss://{HOST}:{tls_redis.port}/0?ssl_ca_certs={tls_redis.tls.ca_cert}"
    )
    with pytest.raises(BackendUnavailable, match="certificate verify failed"):
        backend.check()


def due_now(lease: Lease) -> RunRecord:
    """A run of a fire at the edge of what may be claimed now (1 s ahead)."""
    fire = datetime.now(UTC) + timedelta(seconds=1)
    return RunRecord("job", fire, lease.holder.replica_id, lease.token, datetime.now(UTC))


def claim_when_due(backend: LeaseBackend, lease: Lease, run: RunRecord) -> RunRecord | None:
    """Claim ``run``, waiting as the runner does while the backend says it is not due."""
    for _ in range(20):
        try:
            return backend.claim(lease, run, Retention())
        except FireNotDue as exc:
            time.sleep(exc.wait)
    raise AssertionError("the fire never became due")


def test_fire_far_ahead_of_the_server_clock_is_not_due(
    redis_server: RedisServer, election: str, open_backend: Callable[[str], LeaseBackend]
) -> None:
    """A replica whose clock runs ahead cannot claim a fire early: FireNotDue, with the wait."""
    backend = open_backend(redis_server.url)
    lease = acquire(backend, election)
    fire = datetime.now(UTC) + timedelta(seconds=10)
    run = RunRecord("job", fire, "r1", lease.token, datetime.now(UTC))
    with pytest.raises(FireNotDue) as info:
        backend.claim(lease, run, Retention())
    # 10 s ahead minus the 1 s allowance; + 1 ms: the fire key rounds to the millisecond
    # while the script floors the server clock, so a sub-millisecond round trip can add one.
    assert 8.0 < info.value.wait <= 9.001
    assert backend.claimed(election, "job", fire, fire) == set()


def test_data_loss_refuses_fires_claimable_before_it(
    own_redis: RedisServer, election: str, open_backend: Callable[[str], LeaseBackend]
) -> None:
    """kill -9 without persistence: fires up to the loss (plus the allowance) are never
    claimed again; later fires are (finding F1 of the chaos suite)."""
    backend = open_backend(own_redis.url)
    lease = acquire(backend, election)
    early = due_now(lease)  # claimed 1 s ahead, e.g. by a replica whose clock runs fast
    assert claim_when_due(backend, lease, early) == early
    own_redis.kill()
    own_redis.restart()
    again = acquire(backend, election)  # this backend saw a higher token: loss detected
    assert backend.claim(again, replace(early, token=again.token), Retention()) is None
    later = RunRecord(
        "job", early.scheduled_time + timedelta(seconds=1), "r1", again.token, datetime.now(UTC)
    )
    assert claim_when_due(backend, again, later) == later


# --- batches whose answer is lost ----------------------------------------------------------


class DeafProxy:
    """A TCP proxy to ``target`` that forwards requests always, and replies only while not
    deaf (:meth:`deafen`, :meth:`hear`): when deaf, a request lands on the server and its
    answer never comes."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._deaf = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def deafen(self) -> None:
        self._deaf.set()

    def hear(self) -> None:
        self._deaf.clear()

    def close(self) -> None:
        for sock in [self._listener, *self._sockets]:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(self._target)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, replies: bool) -> None:
        try:
            while data := source.recv(65536):
                if not (replies and self._deaf.is_set()):
                    sink.sendall(data)
        except OSError:
            return


def test_a_batch_that_landed_unanswered_is_settled_by_lookups_and_resends(
    redis_server: RedisServer, open_backend: Callable[[str], LeaseBackend], election: str
) -> None:
    """A claim batch and a start batch land on the server but their answers are lost: each
    call fails (BackendUnavailable, within its bound); lookups show what landed, a resend
    of the claims with the same attempts answers the stored records (nothing claimed
    twice), and a resend of the starts starts nothing again (not-claimed)."""
    proxy = DeafProxy((HOST, redis_server.port))
    try:
        deaf = open_backend(f"redis://{HOST}:{proxy.port}/0")
        direct = open_backend(redis_server.url)
        direct.preflight(election)  # loads every script, as `baton run` does at start
        lease = acquire(deaf, election)
        now = datetime.now(UTC) - timedelta(minutes=1)
        runs = [RunRecord(f"job{i}", now, "r1", lease.token, now) for i in range(50)]
        # A connection of the ledger's pool first: a new one's handshake would go unanswered
        # and the batch never be sent. A timed-out call drops its connection: again below.
        assert deaf.lookup(election, "job0", now) is None
        proxy.deafen()

        with pytest.raises(BackendUnavailable):
            deaf.claim_many(lease, runs, Retention())
        assert [direct.lookup(election, run.job, now) for run in runs] == runs
        assert direct.claim_many(lease, runs, Retention()) == runs

        started = [run.started_now(datetime.now(UTC)) for run in runs]
        proxy.hear()
        assert deaf.lookup(election, "job0", now) == runs[0]
        proxy.deafen()
        with pytest.raises(BackendUnavailable):
            deaf.start_many(lease, started)
        assert [direct.lookup(election, run.job, now) for run in runs] == started
        again = direct.start_many(lease, started)
        assert {getattr(answer, "reason", None) for answer in again} == {"not-claimed"}
    finally:
        proxy.close()
