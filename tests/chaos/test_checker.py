"""The chaos suite's own parts: the checker catches each violation, the ledger fences, the
proxy holds and delays bytes, the fault types agree with the injectors and the backends. A
checker that always says "ok" would prove nothing."""

from __future__ import annotations

import itertools
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest

from scheduler.firing.execution import NOT_CALLED_LOST
from tests.chaos.checker import analyse, markdown
from tests.chaos.cluster import Replicas
from tests.chaos.faketime import FakeClocks
from tests.chaos.faults import (
    FAULT_TYPES,
    INJECTORS,
    Chaos,
    FaultRecord,
    applicable,
    skewed_partition,
)
from tests.chaos.ledger import LedgerStore, Row
from tests.chaos.proxy import Proxy, ProxyLoop
from tests.chaos.run import _claim_epoch
from tests.chaos.targets import (
    NETMAP_DIR,
    ClusterTarget,
    EtcdTarget,
    Holder,
    PostgreSQLTarget,
    RedisTarget,
    SentinelTarget,
    SqliteTarget,
    Target,
    ZooKeeperTarget,
)
from tests.harness.replicas import wait_for

T0 = 1_800_000_000.0  # a whole second: tick instants are multiples of 1 s


class Rows:
    """Builds ledger rows the way the workload writes them."""

    def __init__(self) -> None:
        self.rows: list[Row] = []
        self.marks: dict[str, int] = {}

    def add(
        self,
        job: str,
        tick: float,
        run: str,
        token: int,
        phase: str,
        at: float,
        *,
        op: str = "write",
        value: int | None = None,
        accepted: bool | None = None,
        replica: str = "r1",
    ) -> None:
        mark = self.marks.get(job, 0)
        ok = token >= mark if accepted is None else accepted
        if ok:
            self.marks[job] = max(mark, token)
        self.rows.append(
            Row(
                seq=len(self.rows) + 1,
                resource=job,
                op=op,
                job=job,
                tick=_iso(tick),
                run=run,
                replica=replica,
                token=token,
                pid=1,
                phase=phase,
                accepted=ok,
                value=value,
                at=at,
                mono=at,
                local=at,
                note="",
            )
        )

    def clean(self, seconds: int, token: int = 5) -> None:
        """Every job's every tick, once, by one leader; the counter incremented each time."""
        for i in range(seconds):
            t = T0 + i
            self.add("chaos.tick", t, f"t{i}", token, "start", t + 0.01)
            self.add("chaos.tick", t, f"t{i}", token, "end", t + 0.06)
            self.add("chaos.counter", t, f"c{i}", token, "start", t + 0.01)
            self.add("chaos.counter", t, f"c{i}", token, "read", t + 0.02, op="read", value=i)
            self.add("chaos.counter", t, f"c{i}", token, "store", t + 0.4, op="store", value=i + 1)
            if i % 5 == 0:
                self.add("chaos.long", t, f"l{i}", token, "start", t + 0.2)
                self.add("chaos.long", t, f"l{i}", token, "end", t + 3.2)


def _iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat()


def _meta(seconds: int, backend: str = "redis") -> dict[str, Any]:
    return {
        "backend": backend,
        "seed": 1,
        "duration": seconds,
        "fault_types": ["kill_leader"],
        "skipped_fault_types": [],
        "measure_start": T0,
        "measure_end": T0 + seconds - 1,
        "lease_ttl": 2.0,
        "replicas": 5,
    }


def _report(
    rows: Rows,
    seconds: int = 20,
    faults: list[dict[str, Any]] | None = None,
    unanswered: set[tuple[str, float]] | None = None,
    backend: str = "redis",
) -> Any:
    final = sum(1 for r in rows.rows if r.op == "store" and r.accepted)
    return analyse(
        _meta(seconds, backend), faults or [], rows.rows, {"chaos.counter": final}, unanswered
    )


def _fault(fault_id: int, kind: str, inject: float, heal: float) -> dict[str, Any]:
    return {
        "id": fault_id,
        "type": kind,
        "victim": "r1",
        "old_replica": "r1",
        "old_token": 5,
        "inject": inject,
        "heal": heal,
        "ref": inject,
        "after": 0.0,
        "recovered": heal + 0.5,
    }


def test_a_start_that_went_unanswered_excuses_only_its_own_tick() -> None:
    """A missed tick whose claimant logged start_failed, in a window, with a new term after
    it, is at most once; the same tick without that log line is not caught up."""
    rows = Rows()
    rows.clean(20)
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t8")]
    rows.add("events", T0 + 9, "term", 6, "acquired", T0 + 9.5, op="event", replica="r2")
    faults = [_fault(1, "partition_delay", T0 + 7.5, T0 + 9.0)]
    assert not _report(rows, faults=faults)["ok"]
    report = _report(rows, faults=faults, unanswered={("chaos.tick", T0 + 8)})
    assert report["ok"], report["violations"]
    verdicts = report["ticks"]["chaos.tick"]["missed_by_verdict"]
    assert verdicts == {"its start went unanswered and its term ended (at most once)": 1}
    assert not _report(rows, faults=faults, unanswered={("chaos.tick", T0 + 9)})["ok"]


def test_a_redis_restart_before_the_ticks_fault_was_over_excuses_it() -> None:
    """A Redis data loss that began while the tick's own fault window was open explains
    the miss (the claim epoch refuses it); one long after the window does not."""
    rows = Rows()
    rows.clean(30)
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t8")]
    rows.add("events", T0 + 9, "term", 6, "acquired", T0 + 9.5, op="event", replica="r2")
    cut = _fault(1, "partition_delay", T0 + 7.5, T0 + 9.0)
    soon = _fault(2, "backend_restart", T0 + 12.0, T0 + 13.0)
    report = _report(rows, 30, faults=[cut, soon])
    assert report["ok"], report["violations"]
    late = _fault(2, "backend_restart", T0 + 25.0, T0 + 26.0)
    assert not _report(rows, 30, faults=[cut, late])["ok"]


def _promotion(fault_id: int, inject: float, heal: float, timeline: int) -> dict[str, Any]:
    return {**_fault(fault_id, "promotion", inject, heal), "params": {"timeline": timeline}}


def test_a_promotion_excuses_ticks_up_to_the_new_timelines_first_term_plus_the_allowance() -> None:
    """After a standby promotion the first term on the new timeline refuses every fire up
    to its clock + 1 s (the claim epoch): those misses are explained, a later one is not,
    and on another backend (or without a term on the new timeline) none is."""
    rows = Rows()
    rows.clean(30)
    gone = {"t8", "t9", "t10", "t11"}
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run in gone)]
    new_token = (2 << 40) + 1
    rows.add("events", T0 + 10, "term", new_token, "acquired", T0 + 10.2, op="event")
    faults = [_promotion(1, T0 + 8.0, T0 + 9.5, timeline=2)]
    report = _report(rows, 30, faults=faults, backend="postgresql")
    assert report["ok"], report["violations"]
    verdicts = report["ticks"]["chaos.tick"]["missed_by_verdict"]
    assert verdicts == {"refused by the claim epoch after a standby promotion": 4}
    assert report["failover"]["by_type"]["promotion"]["n"] == 1
    assert not _report(rows, 30, faults=faults, backend="redis")["ok"]
    assert not _report(
        rows, 30, faults=[_promotion(1, T0 + 8.0, T0 + 9.5, timeline=3)], backend="postgresql"
    )["ok"]
    # Due after the epoch's end, with a term after it to catch it up: not explained.
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t12")]
    rows.add("events", T0 + 14, "term", new_token + 1, "acquired", T0 + 14.2, op="event")
    report = _report(rows, 30, faults=faults, backend="postgresql")
    assert report["ticks"]["chaos.tick"]["missed_not_caught_up"] == 1, report["ticks"]


def test_a_promotion_before_the_ticks_fault_was_over_excuses_it() -> None:
    """A promotion that came while the tick's own fault window was open explains the miss
    (the claim epoch refuses it); one long after the window does not."""
    rows = Rows()
    rows.clean(30)
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t8")]
    rows.add("events", T0 + 9, "term", 6, "acquired", T0 + 9.5, op="event", replica="r2")
    cut = _fault(1, "partition_delay", T0 + 7.5, T0 + 9.0)
    rows.add("events", T0 + 13, "term", (2 << 40) + 1, "acquired", T0 + 13.5, op="event")
    soon = _promotion(2, T0 + 12.0, T0 + 13.0, timeline=2)
    report = _report(rows, 30, faults=[cut, soon], backend="postgresql")
    assert report["ok"], report["violations"]
    late = _promotion(2, T0 + 25.0, T0 + 26.0, timeline=2)
    assert not _report(rows, 30, faults=[cut, late], backend="postgresql")["ok"]


def _failover(
    fault_id: int, kind: str, inject: float, heal: float, epoch_end: float | None
) -> dict[str, Any]:
    params = {} if epoch_end is None else {"claim_epoch_end": epoch_end}
    return {**_fault(fault_id, kind, inject, heal), "victim": "server", "params": params}


def test_a_redis_failover_excuses_ticks_up_to_the_claim_epoch_it_opened() -> None:
    """After a Sentinel or Cluster failover the first acquisition on the new primary refuses
    every fire without a record up to its clock + 1 s (the epoch the run read from the
    store): those misses are explained; a later one, the same failover without an epoch,
    and plain Redis are not."""
    rows = Rows()
    rows.clean(30)
    gone = {"t8", "t9", "t10", "t11"}
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run in gone)]
    rows.add("events", T0 + 10, "term", 6, "acquired", T0 + 10.2, op="event", replica="r2")
    for backend, kind in (("sentinel", "primary_kill"), ("cluster", "node_kill")):
        faults = [_failover(1, kind, T0 + 8.0, T0 + 9.5, epoch_end=T0 + 11.2)]
        report = _report(rows, 30, faults=faults, backend=backend)
        assert report["ok"], report["violations"]
        verdicts = report["ticks"]["chaos.tick"]["missed_by_verdict"]
        assert verdicts == {"refused by the claim epoch after a failover": 4}
        assert report["failover"]["by_type"][kind]["n"] == 1
        assert not _report(rows, 30, faults=faults, backend="redis")["ok"]
        no_epoch = [_failover(1, kind, T0 + 8.0, T0 + 9.5, epoch_end=None)]
        assert not _report(rows, 30, faults=no_epoch, backend=backend)["ok"]
    # Due after the epoch's end, with a term after it to catch it up: not explained.
    rows.add("events", T0 + 14, "term", 7, "acquired", T0 + 14.2, op="event", replica="r3")
    short = [_failover(1, "primary_kill", T0 + 8.0, T0 + 9.5, epoch_end=T0 + 10.5)]
    report = _report(rows, 30, faults=short, backend="sentinel")
    assert report["ticks"]["chaos.tick"]["missed_not_caught_up"] == 1, report["ticks"]


def test_a_claim_epoch_excuses_a_tick_only_in_its_faults_reach() -> None:
    """An epoch opened after a fault that came while the tick's own window was open
    explains the miss; one opened long after the window does not."""
    rows = Rows()
    rows.clean(30)
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t8")]
    rows.add("events", T0 + 9, "term", 6, "acquired", T0 + 9.5, op="event", replica="r2")
    cut = _fault(1, "partition_delay", T0 + 7.5, T0 + 9.0)
    soon = _failover(2, "sentinel_failover", T0 + 12.0, T0 + 13.0, epoch_end=T0 + 14.0)
    report = _report(rows, 30, faults=[cut, soon], backend="sentinel")
    assert report["ok"], report["violations"]
    late = _failover(2, "sentinel_failover", T0 + 25.0, T0 + 26.0, epoch_end=T0 + 27.0)
    assert not _report(rows, 30, faults=[cut, late], backend="sentinel")["ok"]


def test_an_unanswered_claim_of_a_killed_claimant_excuses_only_its_own_tick() -> None:
    """A missed tick whose claim its claimant logged as failed (in doubt), the claimant then
    killed while the tick's window was open, is at most once; another replica's failed
    claim, or a kill before the tick, does not explain it."""
    rows = Rows()
    rows.clean(30)
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t8")]
    rows.add("events", T0 + 12, "term", 6, "acquired", T0 + 12.5, op="event", replica="r2")
    cut = _fault(1, "replication_partition", T0 + 7.5, T0 + 9.5)
    kill = {**_fault(2, "kill_leader", T0 + 10.5, T0 + 11.5), "victim": "r1"}
    claims = {("chaos.tick", T0 + 8, "r1")}

    def report(faults: list[dict[str, Any]], failed: set[tuple[str, float, str]]) -> Any:
        final = sum(1 for r in rows.rows if r.op == "store" and r.accepted)
        meta = _meta(30, "sentinel")
        return analyse(meta, faults, rows.rows, {"chaos.counter": final}, None, failed)

    assert not report([cut, kill], set())["ok"]
    ok = report([cut, kill], claims)
    assert ok["ok"], ok["violations"]
    verdicts = ok["ticks"]["chaos.tick"]["missed_by_verdict"]
    assert verdicts == {"its claim went unanswered and its claimant was killed (at most once)": 1}
    assert not report([cut, kill], {("chaos.tick", T0 + 8, "r3")})["ok"]
    early = {**_fault(2, "kill_leader", T0 + 3.0, T0 + 3.4), "victim": "r1"}
    assert not report([cut, early], claims)["ok"]


def test_a_recorded_claim_of_a_killed_leader_excuses_only_its_own_tick() -> None:
    """A missed tick that Baton's own records show claimed under the token of a leader
    killed afterwards is at most once (its catch-up claimed it, then the kill); the same
    record under another token, or by a replica nobody killed, does not explain it."""
    rows = Rows()
    rows.clean(30)
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t8")]
    rows.add("events", T0 + 15, "term", 6, "acquired", T0 + 15.5, op="event", replica="r2")
    cut = _fault(1, "backend_restart", T0 + 6.0, T0 + 8.5)
    kill = {**_fault(2, "kill_leader", T0 + 10.5, T0 + 11.5), "victim": "r1", "old_token": 41}

    def report(record: dict[str, Any] | None) -> Any:
        final = sum(1 for r in rows.rows if r.op == "store" and r.accepted)
        meta = _meta(30, "zookeeper")
        recorded = {} if record is None else {("chaos.tick", T0 + 8): record}
        return analyse(meta, [cut, kill], rows.rows, {"chaos.counter": final}, None, None, recorded)

    assert not report(None)["ok"]
    ok = report({"replica_id": "r1", "token": 41, "outcome": "claimed"})
    assert ok["ok"], ok["violations"]
    verdicts = ok["ticks"]["chaos.tick"]["missed_by_verdict"]
    assert verdicts == {"claimed by the killed leader (at most once)": 1}
    assert not report({"replica_id": "r1", "token": 40, "outcome": "claimed"})["ok"]
    assert not report({"replica_id": "r3", "token": 41, "outcome": "claimed"})["ok"]


def test_a_recorded_start_whose_term_ended_before_the_call_excuses_its_tick() -> None:
    """A missed tick whose own record says it was started and then lost before its job was
    called (its claimant paused right after the start) is at most once; a record still
    claimed, or lost for another reason, does not explain it."""
    rows = Rows()
    rows.clean(30)
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t8")]
    rows.add("events", T0 + 15, "term", 6, "acquired", T0 + 15.5, op="event", replica="r2")
    pause = {**_fault(1, "pause_leader", T0 + 7.5, T0 + 10.5), "victim": "r1"}

    def report(record: dict[str, Any] | None) -> Any:
        final = sum(1 for r in rows.rows if r.op == "store" and r.accepted)
        recorded = {} if record is None else {("chaos.tick", T0 + 8): record}
        meta = _meta(30, "etcd")
        return analyse(meta, [pause], rows.rows, {"chaos.counter": final}, None, None, recorded)

    lost = {"replica_id": "r1", "token": 41, "outcome": "lost", "message": NOT_CALLED_LOST}
    assert not report(None)["ok"]
    ok = report(lost)
    assert ok["ok"], ok["violations"]
    verdicts = ok["ticks"]["chaos.tick"]["missed_by_verdict"]
    assert verdicts == {"started, then its term ended before the job was called (at most once)": 1}
    assert not report({**lost, "outcome": "claimed"})["ok"]
    assert not report({**lost, "message": "replica shut down before the job was called"})["ok"]


class _EpochTarget(Target):
    def __init__(self, epochs: list[str | None]) -> None:
        self.epochs = epochs

    def claim_epoch(self) -> str | None:
        return self.epochs.pop(0)


def test_the_run_notes_a_claim_epoch_only_when_it_changed() -> None:
    """A fault gets the epoch read after it only if it differs from the one seen before (an
    unreadable store keeps the last one seen)."""
    target = _EpochTarget(["0:1800000010000", "0:1800000010000", None, "0:1800000020500"])
    records = [FaultRecord(id=n, type="primary_kill") for n in range(4)]
    seen = _claim_epoch(target, records[0], None)
    seen = _claim_epoch(target, records[1], seen)
    seen = _claim_epoch(target, records[2], seen)
    _claim_epoch(target, records[3], seen)
    assert records[0].params["claim_epoch_end"] == 1_800_000_010.0
    assert "claim_epoch_end" not in records[1].params
    assert "claim_epoch_end" not in records[2].params
    assert records[3].params["claim_epoch_end"] == 1_800_000_020.5


def test_clean_history_passes() -> None:
    """Every tick once, one token: no violation."""
    rows = Rows()
    rows.clean(20)
    report = _report(rows)
    assert report["ok"], report["violations"]
    assert report["ticks"]["chaos.tick"]["run"] == 20


def test_duplicate_tick_is_a_violation() -> None:
    """A second run of a tick, even one the fence refused, counts as a duplicate."""
    rows = Rows()
    rows.clean(20)
    rows.add("chaos.tick", T0 + 3, "again", 4, "start", T0 + 3.5)
    report = _report(rows)
    assert report["duplicated"] == 1 and not report["ok"]


def test_stale_write_accepted_is_a_violation() -> None:
    """A write below the mark that the ledger accepted is caught by the replay."""
    rows = Rows()
    rows.clean(20)
    rows.add("chaos.tick", T0 + 19, "t19", 1, "end", T0 + 19.5, accepted=True)
    report = _report(rows)
    assert report["stale_accepted"] == 1 and not report["ok"]


def test_lost_update_is_a_violation() -> None:
    """Two runs that read the same value and both store it: one update lost."""
    rows = Rows()
    rows.clean(5)
    t = T0 + 5
    rows.add("chaos.counter", t, "a", 5, "read", t + 0.1, op="read", value=5)
    rows.add("chaos.counter", t, "b", 5, "read", t + 0.2, op="read", value=5, replica="r2")
    rows.add("chaos.counter", t, "a", 5, "store", t + 0.5, op="store", value=6)
    rows.add("chaos.counter", t, "b", 5, "store", t + 0.6, op="store", value=6, replica="r2")
    report = _report(rows, seconds=5)
    assert report["lost_updates"] == 1 and not report["ok"]


def test_interleaved_accepted_work_is_an_overlap() -> None:
    """Two replicas' accepted writes of one job interleaving: an overlap."""
    rows = Rows()
    rows.clean(10)
    t = T0 + 10
    rows.add("chaos.long", t, "x", 5, "start", t + 0.1)
    rows.add("chaos.long", t + 1, "y", 5, "start", t + 0.2, replica="r2")
    rows.add("chaos.long", t, "x", 5, "end", t + 0.3)
    report = _report(rows, seconds=10)
    assert report["overlaps"] == 1 and not report["ok"]


def test_missed_tick_needs_a_fault_window() -> None:
    """A tick nobody ran is a violation unless it fell inside a fault's window."""
    rows = Rows()
    rows.clean(20)
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t7")]
    assert not _report(rows)["ok"]
    fault = {
        "id": 1,
        "type": "kill_leader",
        "victim": "r1",
        "old_replica": "r1",
        "old_token": 5,
        "inject": T0 + 6.5,
        "heal": T0 + 7.5,
        "ref": T0 + 6.5,
        "after": 0.0,
        "recovered": T0 + 8.0,
    }
    report = _report(rows, faults=[fault])
    assert report["ticks"]["chaos.tick"]["missed_in_window"] == 1
    assert report["ok"], report["violations"]


def test_report_title_names_backend_seed_and_duration() -> None:
    """The markdown report's title says which run it is: backend, seed, seconds of faults."""
    rows = Rows()
    rows.clean(20)
    meta = {**_meta(20), "seed": 84, "duration": 1500.0}
    report = analyse(meta, [], rows.rows, {"chaos.counter": 20})
    assert markdown(report).splitlines()[0].endswith("Chaos run: redis, seed 84, 1500 s of faults")


def test_skewed_partition_window_covers_the_clock_offset() -> None:
    """A catch_up="all" tick missed after a skewed partition healed is in its window only
    through ``after`` (the offset), and is put down to the clocks even though a new term
    began in time."""
    rows = Rows()
    rows.clean(20)
    rows.rows = [r for r in rows.rows if not (r.job == "chaos.tick" and r.run == "t14")]
    rows.add("events", T0 + 15, "term", 6, "acquired", T0 + 15.2, op="event", replica="r2")
    fault = {
        "id": 1,
        "type": "skewed_partition",
        "victim": "r1",
        "old_replica": "r1",
        "old_token": 5,
        "inject": T0 + 5.0,
        "heal": T0 + 7.0,
        "ref": T0 + 5.0,
        "after": 4.0,
        "recovered": T0 + 8.0,
    }
    report = _report(rows, faults=[fault])
    assert report["ok"], report["violations"]
    assert report["ticks"]["chaos.tick"]["missed_by_verdict"] == {"clocks disagreed": 1}
    assert not _report(rows, faults=[{**fault, "after": 0.0}])["ok"]


def test_every_fault_type_has_an_injector_and_each_backend_lists_its_own() -> None:
    """FAULT_TYPES, INJECTORS, NOT_APPLICABLE and each backend's list agree (a new type
    cannot be drawn without an injector, nor skipped silently on one backend)."""
    assert set(INJECTORS) == set(FAULT_TYPES)
    targets = (
        SqliteTarget,
        RedisTarget,
        ZooKeeperTarget,
        PostgreSQLTarget,
        SentinelTarget,
        ClusterTarget,
        EtcdTarget,
    )
    for target in targets:
        kind = target.kind
        assert target.faults == tuple(t for t in FAULT_TYPES if applicable(t, kind)), kind
    assert not applicable("skewed_partition", "sqlite")
    assert applicable("skewed_partition", "redis") and applicable("skewed_partition", "zookeeper")
    assert not applicable("backend_restart", "sentinel") and applicable("primary_kill", "sentinel")
    assert not applicable("sentinel_failover", "cluster") and applicable("node_kill", "cluster")
    assert applicable("member_partition", "etcd") and not applicable("member_partition", "redis")


class _Log:
    """Stands in for the run's proxies, clocks and sleep; logs every step on a fake clock."""

    def __init__(self) -> None:
        self.now = 0.0
        self.steps: list[tuple[float, str]] = []

    def step(self, what: str) -> None:
        self.steps.append((self.now, what))

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class _FakeProxy:
    def __init__(self, log: _Log) -> None:
        self.log = log

    def blackhole(self) -> None:
        self.log.step("cut")

    def delay(self, seconds: float) -> None:
        self.log.step("cut")

    def heal(self) -> None:
        self.log.step("heal")


class _FakeClocks:
    def __init__(self, log: _Log) -> None:
        self.log = log

    def set(self, replica: str, offset: int) -> None:
        self.log.step("clock back" if offset == 0 else f"clock {offset:+d}")


class _FakeTarget:
    def __init__(self, log: _Log) -> None:
        self.proxies = {f"r{n}": _FakeProxy(log) for n in range(1, 6)}

    def links(self, replica: str) -> list[_FakeProxy]:
        return [self.proxies[replica]]

    def holder(self) -> Holder:
        return Holder("r3", 7)


class _FakeReplicas:
    names = tuple(f"r{n}" for n in range(1, 6))
    paused: frozenset[str] = frozenset()

    def alive(self, name: str) -> bool:
        return True


@pytest.mark.parametrize("seed", range(12))
def test_skewed_partition_steps_the_clock_and_cuts_at_different_moments(seed: int) -> None:
    """Clock step, cut, heal and clock reset happen in that order or with the reset inside
    the cut, never two at once; ``after`` is the offset and the victim is one replica."""
    log = _Log()
    chaos = Chaos(
        target=cast(Target, _FakeTarget(log)),
        replicas=cast(Replicas, _FakeReplicas()),
        clocks=cast(FakeClocks, _FakeClocks(log)),
        rng=random.Random(seed),
        ttl=2.0,
        sleep=log.sleep,
    )
    record = skewed_partition(chaos, 1)
    assert record is not None
    offset = record.params["offset"]
    assert 2 <= abs(offset) <= 10 and record.after == abs(offset)
    names = [what for _, what in log.steps]
    assert names[:2] == [f"clock {offset:+d}", "cut"]
    assert sorted(names[2:]) == ["clock back", "heal"]
    times = [at for at, _ in log.steps]
    assert all(b - a >= 0.3 for a, b in itertools.pairwise(times)), log.steps
    assert record.victim in _FakeReplicas.names and record.heal >= record.inject


class _FakeSentinel(_FakeTarget):
    """A Sentinel target whose promotion fails, logging every step."""

    server_pid = 42

    def __init__(self, log: _Log) -> None:
        super().__init__(log)
        self.log = log

    def pick_replica(self, rng: random.Random) -> str:
        return "replica-b"

    def address(self, server: str) -> str:
        return f"127.0.0.1:{server}"

    def hold_replication(self, server: str | None = None) -> None:
        self.log.step(f"hold {server}")

    def release_replication(self, server: str | None = None) -> None:
        self.log.step(f"release {server}")

    def promote(self, server: str) -> None:
        self.log.step(f"promote {server}")
        raise TimeoutError("every Sentinel sees the new replica priorities not reached")


def test_lagging_promotion_releases_the_held_link_even_when_the_promotion_fails() -> None:
    """The lagging replica's link is held before the promotion and released after it,
    whatever the promotion did: a failed fault must not leave a replica cut for the rest
    of the run."""
    log = _Log()
    chaos = Chaos(
        target=cast(Target, _FakeSentinel(log)),
        replicas=cast(Replicas, _FakeReplicas()),
        clocks=cast(FakeClocks, _FakeClocks(log)),
        rng=random.Random(3),
        ttl=2.0,
        sleep=log.sleep,
    )
    with pytest.raises(TimeoutError):
        INJECTORS["lagging_promotion"](chaos, 1)
    names = [what for _, what in log.steps]
    assert names == ["hold replica-b", "promote replica-b", "release replica-b"]
    assert 0.5 <= log.steps[1][0] - log.steps[0][0] <= 3.0  # the lag before the promotion


def test_ledger_fences_reads_and_stores(tmp_path: Path) -> None:
    """A read raises the mark: an older token can then neither read nor store."""
    store = LedgerStore(tmp_path / "ledger.db")
    try:
        base = {"resource": "c", "job": "c"}
        assert store.apply({"op": "read", "token": 2, **base}) == {"accepted": True, "value": 0}
        assert store.apply({"op": "store", "token": 1, "value": 9, **base}) == {"accepted": False}
        assert store.apply({"op": "store", "token": 2, "value": 1, **base})["accepted"]
        assert store.counters() == {"c": 1}
        assert [r.accepted for r in store.rows()] == [True, False, True]
    finally:
        store.close()


@pytest.fixture
def echo_server() -> Iterator[int]:
    """A loopback echo server; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_echo, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield port
    listener.close()


def _echo(conn: socket.socket) -> None:
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)


def test_proxy_blackhole_holds_bytes_until_heal_and_delay_delays(echo_server: int) -> None:
    """Blackhole: nothing arrives, then everything in order after heal; delay: late."""
    loop = ProxyLoop()
    proxy = Proxy(loop, echo_server)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as client:
            client.sendall(b"a")
            assert client.recv(1) == b"a"
            proxy.blackhole()
            wait_for(lambda: proxy.mode == "blackhole", 5, "the proxy loop to hold")
            client.sendall(b"bc")
            client.settimeout(0.3)
            with pytest.raises(TimeoutError):
                client.recv(2)
            proxy.heal()
            client.settimeout(5)
            got = b""
            while len(got) < 2:
                got += client.recv(2)
            assert got == b"bc"
            proxy.delay(0.3)
            wait_for(lambda: proxy.mode == "delay 0.3s", 5, "the proxy loop to delay")
            sent = time.monotonic()
            client.sendall(b"d")
            assert client.recv(1) == b"d"
            assert time.monotonic() - sent >= 0.5  # delayed both ways
    finally:
        proxy.close()
        loop.close()


def test_netmap_sends_a_replicas_connections_to_its_own_proxy(echo_server: int) -> None:
    """A process started with the netmap directory and BATON_CHAOS_NETMAP connects to its
    own proxy when it dials the mapped port (so a partition there cuts it), and only then."""
    loop = ProxyLoop()
    proxy = Proxy(loop, echo_server)
    unused = socket.create_server(("127.0.0.1", 0))
    mapped = unused.getsockname()[1]
    unused.close()  # nothing listens on it: only the remapping can reach the echo server
    script = (
        "import socket, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
        "s.sendall(b'ping'); print(s.recv(4).decode())\n"
    )
    env = {**os.environ, "PYTHONPATH": str(NETMAP_DIR)}
    try:
        remapped = subprocess.run(
            [sys.executable, "-c", script, str(mapped)],
            env={**env, "BATON_CHAOS_NETMAP": f"{mapped}:{proxy.port}"},
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert remapped.stdout.strip() == "ping", remapped.stderr
        plain = subprocess.run(
            [sys.executable, "-c", script, str(mapped)],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert plain.returncode != 0 and "ConnectionRefused" in plain.stderr
    finally:
        proxy.close()
        loop.close()


def test_the_claim_recorder_keeps_every_record_it_saw_with_its_newest_state(
    tmp_path: Path,
) -> None:
    """The recorder reads a real store's records of the jobs it watches and writes them,
    each in the newest state it saw; load() gives them by (job, instant) for the checker."""
    from scheduler.backends import from_url
    from scheduler.backends.runs import Retention
    from tests.chaos import records
    from tests.contract.support import acquire, holder, now_ms, run_for

    url = f"sqlite:///{tmp_path / 'baton.db'}"
    backend = from_url(url)
    try:
        lease = acquire(backend, "chaos", holder("r1"))
        first, second = run_for(lease, now_ms(-2.0), "chaos.tick"), run_for(lease, now_ms(-1.0))
        backend.claim(lease, first, Retention())
        backend.claim(lease, second, Retention())
        recorder = records.ClaimRecorder(url, "chaos", ["chaos.tick"], tmp_path)
        recorder.start()
        backend.finish("chaos", first.started_now(now_ms()).finished("ok", now_ms()))
        recorder.stop()
    finally:
        backend.close()
    found = records.load(tmp_path)
    assert list(found) == [("chaos.tick", first.scheduled_time.timestamp())]
    recorded = found[("chaos.tick", first.scheduled_time.timestamp())]
    assert recorded["replica_id"] == "r1" and recorded["token"] == lease.token
    assert recorded["outcome"] == "ok"
    assert records.load(tmp_path / "nothing") == {}
