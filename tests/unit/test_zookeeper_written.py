"""The ZooKeeper ledger's memory of the run nodes it wrote (:mod:`~scheduler.backends.
zookeeper.written`): pure bookkeeping, so checked here without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from scheduler.backends.runs import RunRecord
from scheduler.backends.zookeeper.latch import DELETED, LatchNode
from scheduler.backends.zookeeper.written import WrittenNodes

BASE = datetime(2026, 3, 1, tzinfo=UTC)
PATH = "/baton/c/runs/job/000000000000001"


def latch(version: int = 0, path: str = "/baton/c/latch/n-0000000001") -> LatchNode:
    return LatchNode("c", path, "holder", token=7, version=version, session=1)


def claimed(attempt: str = "a1") -> RunRecord:
    return RunRecord("job", BASE, "r1", 7, BASE, attempt=attempt)


def test_a_claimed_node_is_recalled_for_its_own_attempt_under_its_fence() -> None:
    """A node written under a latch node is recalled, with that latch node, for a write of
    the same attempt in the remembered state; its data carries the attempt and outcome."""
    written, fence = WrittenNodes(), latch()
    written.wrote(PATH, claimed(), 0, fence)

    recalled = written.recall(PATH, claimed(), "claimed", fence)

    assert recalled is not None
    node, held = recalled
    assert node.version == 0 and held is fence
    assert node.data is not None
    assert json.loads(node.data) == {"attempt": "a1", "outcome": "claimed"}


def test_nothing_is_recalled_that_a_plan_could_not_write_from() -> None:
    """Another attempt, another state, another latch node (or version), a latch node known
    lost or released: the node must be read instead."""
    written, fence = WrittenNodes(), latch()
    written.wrote(PATH, claimed(), 0, fence)

    assert written.recall(PATH, claimed("other"), None) is None
    assert written.recall(PATH, claimed(), "running") is None
    assert written.recall(PATH, claimed(), "claimed", latch(version=1)) is None
    assert written.recall(PATH, claimed(), "claimed", latch(path="/baton/c/latch/n-2")) is None
    fence.lost = DELETED
    assert written.recall(PATH, claimed(), None) is None
    fence.lost, fence.released = None, True
    assert written.recall(PATH, claimed(), None) is None


def test_finished_or_unfenced_writes_and_forgotten_paths_are_not_kept() -> None:
    """An outcome is the last write of ours, an unfenced write has nothing to check, and a
    forgotten path (deleted, or written by a multi that failed) is read again."""
    written, fence = WrittenNodes(), latch()
    written.wrote(PATH, claimed(), 0, fence)
    written.wrote(PATH, claimed().finished("ok", BASE), 1, fence)
    assert len(written) == 0
    written.wrote(PATH, claimed(), 0, None)
    assert len(written) == 0
    written.wrote(PATH, claimed(), 0, fence)
    written.forget([PATH])
    assert written.recall(PATH, claimed(), None) is None


def test_the_memory_is_bounded_dropping_the_oldest_write_first() -> None:
    """Beyond the cap the entry written longest ago goes; rewriting a path renews it."""
    written, fence = WrittenNodes(cap=2), latch()
    written.wrote("/a", claimed(), 0, fence)
    written.wrote("/b", claimed(), 0, fence)
    written.wrote("/a", claimed().started_now(BASE), 1, fence)
    written.wrote("/c", claimed(), 0, fence)

    assert len(written) == 2
    assert written.recall("/b", claimed(), None) is None
    assert written.recall("/a", claimed(), "running") is not None
    assert written.recall("/c", claimed(), "claimed") is not None
