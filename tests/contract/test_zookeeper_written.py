"""ZooKeeper only: starts and outcomes of runs the ledger wrote itself send no read
(:mod:`~scheduler.backends.zookeeper.written`), and a remembered version that went stale
still gets the answers the single calls give, through their fallback.

Requests are counted on the backend's own kazoo client (every request goes through its
``_call``), against the real server of the contract suite.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from kazoo.client import KazooClient

from scheduler.backends.runs import Retention, RunRecord
from scheduler.backends.states import ClaimRefusal
from scheduler.backends.zookeeper import ZooKeeperBackend
from scheduler.errors import ClaimLost
from scheduler.leadership.lease import Lease
from tests.contract.support import LONG_TTL, at, finished, holder, run_for
from tests.harness.zookeeper_server import ZooKeeperServer

OP_TIMEOUT = 1.0


class Requests:
    """Counts the requests a backend's kazoo client sends, by request type."""

    def __init__(self, backend: ZooKeeperBackend) -> None:
        self.sent: Counter[str] = Counter()
        client = backend._session.client
        call = client._call

        def counting(request: Any, async_object: Any) -> Any:
            self.sent[type(request).__name__] += 1
            return call(request, async_object)

        client._call = counting

    def during(self) -> Counter[str]:
        """Reset the counts; the counter itself, to read after the calls."""
        self.sent.clear()
        return self.sent


@pytest.fixture
def chroot_url(zookeeper_server: ZooKeeperServer) -> str:
    return zookeeper_server.url(chroot=f"/written-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def backends(chroot_url: str) -> Iterator[list[ZooKeeperBackend]]:
    """The backend under test first, then a reader (a second session)."""
    opened = [ZooKeeperBackend.from_url(chroot_url, op_timeout=OP_TIMEOUT) for _ in range(2)]
    yield opened
    for backend in opened:
        backend.close()


@pytest.fixture
def admin(zookeeper_server: ZooKeeperServer) -> Iterator[KazooClient]:
    """Another client, to change run nodes behind the backend."""
    client = zookeeper_server.client()
    yield client
    client.stop()
    client.close()


def lead(backend: ZooKeeperBackend) -> Lease:
    lease = backend.try_acquire("c", holder("r1"), LONG_TTL)
    assert lease is not None
    return lease


def claim(backend: ZooKeeperBackend, lease: Lease, jobs: int) -> list[RunRecord]:
    runs = [run_for(lease, at(0), job=f"job{index}") for index in range(jobs)]
    assert backend.claim_many(lease, runs, Retention()) == runs
    return runs


def node_path(chroot_url: str, run: RunRecord) -> str:
    chroot = chroot_url.rsplit("/", 1)[1]
    return f"/{chroot}/c/runs/{run.job}/{run.key:015d}"


def test_start_and_finish_of_runs_this_ledger_claimed_send_no_read(
    backends: list[ZooKeeperBackend],
) -> None:
    """After a batch of claims, the batch of their starts and the batch of their outcomes
    are one multi each, no read; what they store is what the single calls would."""
    backend, reader = backends
    lease = lead(backend)
    runs = claim(backend, lease, 20)
    requests = Requests(backend)

    sent = requests.during()
    started = backend.start_many(lease, [run.started_now(datetime.now(UTC)) for run in runs])
    assert sent == Counter({"Transaction": 1})
    assert all(isinstance(answer, RunRecord) for answer in started)

    sent = requests.during()
    done = [finished(answer) for answer in started if isinstance(answer, RunRecord)]
    backend.finish_many("c", done)
    assert sent == Counter({"Transaction": 1})

    for record in done:
        assert reader.lookup("c", record.job, record.scheduled_time) == record


def test_a_version_changed_behind_the_ledger_is_read_again_through_the_fallback(
    backends: list[ZooKeeperBackend], admin: KazooClient, chroot_url: str
) -> None:
    """A remembered version that is stale (another client rewrote one node the same, and
    gave another the record of another attempt) fails the multi; the single calls then
    start the first and refuse the second, and no outcome overwrites another attempt."""
    backend, reader = backends
    lease = lead(backend)
    runs = claim(backend, lease, 3)
    same, taken, untouched = runs
    raw, _ = admin.get(node_path(chroot_url, same))
    admin.set(node_path(chroot_url, same), raw)  # same record, next version
    rival = run_for(lease, at(0), job=taken.job)
    admin.set(node_path(chroot_url, taken), rival.to_json().encode())

    starts = [run.started_now(datetime.now(UTC)) for run in runs]
    answers = backend.start_many(lease, starts)

    assert answers[0] == starts[0] and answers[2] == starts[2]
    assert isinstance(answers[1], ClaimLost)
    assert answers[1].reason == ClaimRefusal.OTHER_ATTEMPT
    assert reader.lookup("c", taken.job, taken.scheduled_time) == rival

    # The outcome batch: one run remembered, one rewritten by another attempt meanwhile.
    other = run_for(lease, at(0), job=untouched.job)
    admin.set(node_path(chroot_url, untouched), other.to_json().encode())
    outcomes = [finished(starts[0]), finished(starts[2])]
    backend.finish_many("c", outcomes)

    assert reader.lookup("c", same.job, same.scheduled_time) == outcomes[0]
    assert reader.lookup("c", untouched.job, untouched.scheduled_time) == other


def test_an_outcome_after_the_lease_is_lost_is_still_stored(
    backends: list[ZooKeeperBackend], zookeeper_server: ZooKeeperServer
) -> None:
    """Outcomes need no lease: runs remembered under a latch node that is gone (the session
    expired) are read and stored as before, not refused by the lease's check."""
    backend, reader = backends
    lease = lead(backend)
    runs = claim(backend, lease, 5)
    started = backend.start_many(lease, [run.started_now(datetime.now(UTC)) for run in runs])
    session = backend.session_id
    assert session is not None
    zookeeper_server.expire_session(session)

    done = [finished(answer) for answer in started if isinstance(answer, RunRecord)]
    backend.finish_many("c", done)

    for record in done:
        assert reader.lookup("c", record.job, record.scheduled_time) == record


def test_claims_of_jobs_listed_under_the_same_lease_send_the_multi_alone(
    backends: list[ZooKeeperBackend],
) -> None:
    """A claim batch of jobs this ledger listed and claimed under the same latch node sends
    no listing and no read while no trim can be due; once one is due it lists again and
    trims by the rule."""
    backend, reader = backends
    lease = lead(backend)
    first = claim(backend, lease, 20)
    backend.finish_many("c", [finished(run) for run in first])
    requests = Requests(backend)

    sent = requests.during()
    second = [run_for(lease, at(10), job=run.job) for run in first]
    assert backend.claim_many(lease, second, Retention(limit=2)) == second
    assert sent == Counter({"Transaction": 1})

    sent = requests.during()
    third = [run_for(lease, at(20), job=run.job) for run in first]
    assert backend.claim_many(lease, third, Retention(limit=2)) == third
    assert sent["GetChildren"] + sent["GetChildren2"] == 20
    for old, new in zip(second, third, strict=True):
        assert reader.history("c", old.job, 10) == [new, old]  # the finished first: trimmed


def test_a_fire_created_behind_the_ledger_is_answered_through_the_fallback(
    backends: list[ZooKeeperBackend], admin: KazooClient, chroot_url: str
) -> None:
    """A run node that appeared where this ledger's listing says there is none fails the
    batch's multi; the single claims then answer it as taken and claim the others."""
    backend, reader = backends
    lease = lead(backend)
    first = claim(backend, lease, 3)
    batch = [run_for(lease, at(10), job=run.job) for run in first]
    rival = run_for(lease, at(10), job=batch[1].job)
    admin.create(node_path(chroot_url, rival), rival.to_json().encode())

    answers = backend.claim_many(lease, batch, Retention())

    assert answers == [batch[0], None, batch[2]]
    assert reader.lookup("c", rival.job, rival.scheduled_time) == rival
