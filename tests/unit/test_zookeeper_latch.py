"""The ZooKeeper leader latch's state machine, driven directly: no server, no threads.

:class:`~scheduler.backends.zookeeper.latch.LeaderLatch` holds no connection; the I/O
around it (``lease.py``, ``watcher.py``) reports what the server answered. These tests play
that part: a node joins and wins, the connection is suspended (under each policy),
reconnects, the session is lost, a watch fires, a holder releases or queues anew. Loss
notices are collected instead of run on a thread. The same transitions on a real server
are in ``tests/faults/test_zookeeper_faults.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scheduler.backends.rules import granted
from scheduler.backends.states import LossReason
from scheduler.backends.zookeeper.latch import LatchNode, LeaderLatch
from scheduler.backends.zookeeper.settings import OnSuspended
from scheduler.errors import LeaseLost
from scheduler.leadership.lease import Holder, Lease

ELECTION = "jobs"
LATCH = f"/baton/{ELECTION}/latch"
SESSION = 0x1001


class Notices:
    """Loss notices the latch hands over, run on demand (the backend's notice thread)."""

    def __init__(self) -> None:
        self.queued: list[Callable[[], None]] = []

    def __call__(self, notice: Callable[[], None]) -> None:
        self.queued.append(notice)

    def run(self) -> None:
        while self.queued:
            self.queued.pop(0)()


class Watched:
    """A lease's ``on_lost`` callback that records each reason it is given."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def make_latch(policy: OnSuspended = "lose") -> tuple[LeaderLatch, Notices]:
    notices = Notices()
    return LeaderLatch(policy, notices), notices


def join(latch: LeaderLatch, holder: Holder, seq: int, session: int = SESSION) -> LatchNode:
    """What the I/O does once its create answered: track the node (czxid = 100 + seq)."""
    path = f"{LATCH}/guid{seq}-latch-{seq:010d}"
    return latch.joined(ELECTION, holder.id, path, token=100 + seq, version=0, session=session)


def lease_of(node: LatchNode, holder: Holder) -> Lease:
    return granted(ELECTION, holder, node.token, 10.0, 0.0, node.path)


def acquire(latch: LeaderLatch, holder: Holder, seq: int = 1) -> tuple[LatchNode, Lease]:
    """Join and win while connected: the lease is issued."""
    node = join(latch, holder, seq)
    assert latch.won(node, connected=True)
    return node, lease_of(node, holder)


def test_acquire_issues_the_lowest_node_and_owned_returns_it() -> None:
    """A joined node that wins is issued: owned() finds it for its lease, held() by holder."""
    latch, _ = make_latch()
    holder = Holder.new("r1", host="test")
    node, lease = acquire(latch, holder)
    assert node.issued and node.lost is None
    assert latch.owned(lease, connected=True, started=True) is node
    assert latch.held(ELECTION, holder.id) is node
    assert latch.queued(ELECTION) == []


def test_a_queued_node_is_listed_for_waiting_until_it_wins() -> None:
    """Until it wins, a node is queued (wait_for_change waits behind its predecessor) and
    grants no lease."""
    latch, _ = make_latch()
    holder = Holder.new("r1", host="test")
    node = join(latch, holder, 7)
    assert latch.queued(ELECTION) == [node.path.rsplit("/", 1)[1]]
    with pytest.raises(LeaseLost, match="not-holder"):
        latch.owned(lease_of(node, holder), connected=True, started=True)


def test_a_lease_this_instance_never_saw_is_left_to_the_server() -> None:
    """owned() answers None for a lease of another instance: it is verified remotely."""
    latch, _ = make_latch()
    stranger = lease_of(
        LatchNode(ELECTION, f"{LATCH}/x-latch-0000000009", "h", 9, 0, 1), Holder.new("r9")
    )
    assert latch.owned(stranger, connected=True, started=True) is None


def test_suspended_with_lose_policy_loses_every_issued_lease_once_and_dooms_its_node() -> None:
    """SUSPENDED under "lose": the lease is lost at once, on_lost runs once, owned() raises
    the reason, and the node is deleted at the reconnect (listed as doomed)."""
    latch, notices = make_latch("lose")
    holder = Holder.new("r1", host="test")
    node, lease = acquire(latch, holder)
    watched = Watched()
    assert latch.watch(lease, watched) is node
    latch.suspended()
    latch.suspended()  # a second state change does not notify again
    notices.run()
    assert watched.reasons == [LossReason.CONNECTION_SUSPENDED]
    with pytest.raises(LeaseLost, match="connection-suspended"):
        latch.owned(lease, connected=False, started=True)
    assert latch.doomed(node.path)
    issued, doomed = latch.connected()
    assert issued == [] and doomed == [node.path]
    latch.deleted(node.path)
    assert not latch.doomed(node.path)


def test_suspended_with_wait_policy_keeps_the_lease_until_the_renew_deadline() -> None:
    """SUSPENDED under "wait": nothing is lost; owned() still returns the node (the I/O then
    answers BackendUnavailable, and the elector's renew deadline decides)."""
    latch, notices = make_latch("wait")
    holder = Holder.new("r1", host="test")
    node, lease = acquire(latch, holder)
    watched = Watched()
    latch.watch(lease, watched)
    latch.suspended()
    notices.run()
    assert watched.reasons == []
    assert latch.owned(lease, connected=False, started=True) is node
    assert not latch.doomed(node.path)


def test_suspended_before_the_listener_ran_is_lost_on_first_use_under_lose() -> None:
    """owned() applies the "lose" policy itself when the connection is down but the state
    listener has not run yet."""
    latch, _ = make_latch("lose")
    holder = Holder.new("r1", host="test")
    node, lease = acquire(latch, holder)
    with pytest.raises(LeaseLost, match="connection-suspended"):
        latch.owned(lease, connected=False, started=True)
    assert node.lost == LossReason.CONNECTION_SUSPENDED


@pytest.mark.parametrize(("policy", "issued"), [("lose", False), ("wait", True)])
def test_winning_while_suspended_follows_the_policy(policy: OnSuspended, issued: bool) -> None:
    """A node found lowest just as the connection dropped: "lose" refuses it (and dooms the
    node), "wait" issues it."""
    latch, _ = make_latch(policy)
    node = join(latch, Holder.new("r1", host="test"), 1)
    assert latch.won(node, connected=False) is issued
    assert latch.doomed(node.path) is not issued


def test_reconnected_reads_issued_nodes_again_and_a_missing_one_is_lost() -> None:
    """After a reconnect each issued node is re-read: found unchanged it stays held, missing
    (same session) it is lost as node-deleted, rewritten it is lost as node-modified."""
    latch, notices = make_latch("wait")
    kept, kept_lease = acquire(latch, Holder.new("r1", host="test"), 1)
    gone, _ = acquire(latch, Holder.new("r2", host="test"), 2)
    rewritten, _ = acquire(latch, Holder.new("r3", host="test"), 3)
    watched = Watched()
    latch.watch(kept_lease, watched)
    latch.suspended()
    issued, doomed = latch.connected()
    assert issued == [kept, gone, rewritten] and doomed == []
    latch.node_read(kept, (kept.version, kept.token), SESSION)
    latch.node_read(gone, None, SESSION)
    latch.node_read(rewritten, (rewritten.version + 1, rewritten.token), SESSION)
    notices.run()
    assert latch.owned(kept_lease, connected=True, started=True) is kept
    assert watched.reasons == []
    assert (gone.lost, rewritten.lost) == (LossReason.NODE_DELETED, LossReason.NODE_MODIFIED)


def test_a_missing_node_read_under_another_session_is_left_to_the_session_change() -> None:
    """A re-read that finds no node after the session changed does not call it deleted: the
    session's loss (session-expired) is the reason."""
    latch, _ = make_latch()
    node, _ = acquire(latch, Holder.new("r1", host="test"))
    latch.node_read(node, None, SESSION + 1)
    assert node.lost is None
    latch.session_lost()
    assert node.lost == LossReason.SESSION_EXPIRED


def test_session_lost_loses_every_node_and_forgets_the_doomed() -> None:
    """LOST: every node is lost as session-expired (on_lost once), dropped, and nothing is
    left to delete (the server deleted the session's nodes)."""
    latch, notices = make_latch("lose")
    holder = Holder.new("r1", host="test")
    node, lease = acquire(latch, holder)
    queued = join(latch, Holder.new("r2", host="test"), 2)
    watched = Watched()
    latch.watch(lease, watched)
    latch.session_lost()
    notices.run()
    assert watched.reasons == [LossReason.SESSION_EXPIRED]
    assert latch.tracked(node.path) is None and latch.tracked(queued.path) is None
    assert latch.gone(node.path) == LossReason.SESSION_EXPIRED
    with pytest.raises(LeaseLost, match="session-expired"):
        latch.owned(lease, connected=True, started=True)
    assert latch.connected() == ([], [])


def test_release_dooms_the_node_and_silences_on_lost() -> None:
    """release(): the node is to be deleted, later losses notify nobody, and a second
    release finds it gone (released)."""
    latch, notices = make_latch()
    holder = Holder.new("r1", host="test")
    node, lease = acquire(latch, holder)
    watched = Watched()
    latch.watch(lease, watched)
    assert latch.release(node, lease)
    assert latch.doomed(node.path)
    latch.lose(node, LossReason.NODE_DELETED)
    notices.run()
    assert watched.reasons == []
    assert latch.tracked(node.path) is None
    assert latch.gone(node.path) == LossReason.RELEASED
    latch.watch(lease, watched)  # watching a released lease says nothing either
    notices.run()
    assert watched.reasons == []


def test_release_by_another_holder_or_after_expiry_deletes_nothing() -> None:
    """Another holder's lease does not release the node; a node that went with its session
    is not deleted again."""
    latch, _ = make_latch()
    holder = Holder.new("r1", host="test")
    node, _ = acquire(latch, holder)
    assert not latch.release(node, lease_of(node, Holder.new("r2", host="test")))
    assert latch.tracked(node.path) is node
    latch.lose(node, LossReason.SESSION_EXPIRED)
    assert not latch.release(node, lease_of(node, holder))
    assert not latch.doomed(node.path)


def test_a_lost_lease_is_retired_so_its_holder_queues_anew() -> None:
    """A holder whose lease was lost gives its node up (doomed) and joins again with a new
    node and a larger token."""
    latch, _ = make_latch()
    holder = Holder.new("r1", host="test")
    node, _ = acquire(latch, holder, 1)
    latch.lose(node, LossReason.CONNECTION_SUSPENDED)
    assert latch.retire(node)
    assert latch.held(ELECTION, holder.id) is None and latch.doomed(node.path)
    again, _ = acquire(latch, holder, 5)
    assert again.token > node.token
    assert latch.held(ELECTION, holder.id) is again


def test_watch_fires_on_a_deleted_or_rewritten_node() -> None:
    """A watch seeing the node deleted loses the lease (node-deleted) and drops it; one
    seeing it rewritten loses it as node-modified. Queued nodes are not leases."""
    latch, notices = make_latch()
    deleted, deleted_lease = acquire(latch, Holder.new("r1", host="test"), 1)
    rewritten, rewritten_lease = acquire(latch, Holder.new("r2", host="test"), 2)
    queued = join(latch, Holder.new("r3", host="test"), 3)
    first, second = Watched(), Watched()
    latch.watch(deleted_lease, first)
    latch.watch(rewritten_lease, second)
    latch.node_deleted(deleted.path)
    latch.node_changed(rewritten.path)
    latch.node_deleted(queued.path)
    notices.run()
    assert first.reasons == [LossReason.NODE_DELETED]
    assert second.reasons == [LossReason.NODE_MODIFIED]
    assert latch.tracked(deleted.path) is None and latch.tracked(rewritten.path) is rewritten
    assert queued.lost is None


def test_watching_a_lease_lost_already_tells_at_once() -> None:
    """watch() on a lease lost before it was watched notifies with the reason; on another
    holder's lease with not-holder; neither needs a watch on the server."""
    latch, notices = make_latch()
    holder = Holder.new("r1", host="test")
    node, lease = acquire(latch, holder)
    latch.node_deleted(node.path)
    watched = Watched()
    assert latch.watch(lease, watched) is None
    other, _ = acquire(latch, Holder.new("r2", host="test"), 2)
    impostor = Watched()
    assert latch.watch(lease_of(other, holder), impostor) is None
    notices.run()
    assert watched.reasons == [LossReason.NODE_DELETED]
    assert impostor.reasons == [LossReason.NOT_HOLDER]


def test_a_node_of_an_expired_session_is_refused_before_any_request() -> None:
    """expect_session(): a node whose session is not the current one is lost as expired."""
    latch, _ = make_latch()
    node, _ = acquire(latch, Holder.new("r1", host="test"))
    latch.expect_session(node, SESSION)
    with pytest.raises(LeaseLost, match="session-expired"):
        latch.expect_session(node, SESSION + 1)
    assert node.lost == LossReason.SESSION_EXPIRED


def test_lost_by_a_call_keeps_the_first_reason() -> None:
    """lost(): the error carries the reason found first; deleted/expired nodes are dropped."""
    latch, _ = make_latch()
    node, _ = acquire(latch, Holder.new("r1", host="test"))
    latch.lose(node, LossReason.CONNECTION_SUSPENDED)
    error = latch.lost(node, LossReason.NODE_DELETED)
    assert error.reason == LossReason.CONNECTION_SUSPENDED
    assert latch.tracked(node.path) is None
