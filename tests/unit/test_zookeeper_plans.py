"""ZooKeeper's batch plans (:mod:`scheduler.backends.zookeeper.plans`): pure, so checked
here against the shared trim rule with every history the reads could miss."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.backends.rules import TRIM_SCAN, select_trim
from scheduler.backends.runs import (
    OUTCOMES,
    UNFINISHED,
    Outcome,
    Retention,
    RunRecord,
    from_fire_key,
)
from scheduler.backends.zookeeper.plans import (
    MULTI_BYTES,
    MULTI_RUNS,
    JobNodes,
    Node,
    Op,
    Step,
    chunked,
    plan_claims,
    trim_reads,
)

BASE = datetime(2026, 3, 1, tzinfo=UTC)


def path_of(job: str, key: int) -> str:
    return f"/baton/c/runs/{job}/{key:015d}"


def record(job: str, key: int, outcome: Outcome) -> RunRecord:
    """A stored record of ``job``'s fire ``key`` in state ``outcome``."""
    run = RunRecord(job, from_fire_key(key), "r1", 1, BASE)
    return run if outcome in UNFINISHED else run.finished(outcome, BASE)


@pytest.mark.parametrize("seed", range(40))
def test_planned_trims_with_only_the_reads_it_asks_for_match_the_rule(seed: int) -> None:
    """Claims planned from the job's keys and only the nodes trim_reads() names trim exactly
    what select_trim() decides with the whole history known, claim after claim (the bound
    on what to read is enough); nodes it did not read are never touched."""
    rng = random.Random(seed)
    step_ms = 1000
    history = {
        k * step_ms: rng.choice(OUTCOMES) for k in rng.sample(range(60), rng.randrange(0, 50))
    }
    retention = Retention(limit=rng.choice([0, 1, 3, 10, 40]), protect=rng.choice([0, 2.5, 20]))
    fires = [rng.randrange(80) * step_ms for _ in range(rng.randrange(1, 8))]
    keys = sorted(history)
    read = set(trim_reads(keys, fires, retention)) | {k for k in fires if k in history}
    nodes = {
        k: Node(record("j", k, history[k]).to_json().encode(), version=k) for k in sorted(read)
    }
    runs = [RunRecord("j", from_fire_key(k), "r1", 1, BASE) for k in fires]

    answers, steps = plan_claims(runs, retention, {"j": JobNodes(keys, nodes)}, path_of)

    model: dict[int, str | None] = dict(history)
    expected: list[RunRecord | None] = []
    deletes: list[int] = []
    for run in runs:
        if run.key in model:  # another attempt's record (every run is a new attempt)
            expected.append(None)
            continue
        victims = select_trim(model, run.key, retention, TRIM_SCAN)
        deletes += victims
        for key in victims:
            del model[key]
        model[run.key] = "claimed"
        expected.append(run)
    planned = [op for step in steps for op in step.ops if op.kind == "delete"]
    assert [int(op.path.rsplit("/", 1)[1]) for op in planned] == deletes
    assert set(deletes) <= read
    assert all(op.version == int(op.path.rsplit("/", 1)[1]) for op in planned)  # as read
    assert answers == expected


def test_one_claim_reads_no_more_than_a_single_claim_did() -> None:
    """For one fire of a job, trim_reads() names the single claim's window: the excess over
    the limit, oldest first, below the cutoff, at most TRIM_SCAN."""
    keys = list(range(0, 200_000, 1000))
    assert trim_reads(keys, [200_000], Retention(limit=100)) == keys[:101]
    assert trim_reads(keys, [200_000], Retention(limit=500)) == []
    assert trim_reads(keys, [200_000], Retention(limit=100, protect=190)) == keys[:10]
    many = list(range(5000))
    assert len(trim_reads(many, [10_000], Retention(limit=0))) == TRIM_SCAN


def test_chunks_stay_within_the_request_size_and_keep_a_claim_whole() -> None:
    """Steps go into multis of at most MULTI_RUNS runs and MULTI_BYTES, in order; a step
    bigger than the budget travels alone and is never split."""
    small = [Step(i, (Op("create", path_of("j", i), b"x" * 300),)) for i in range(2000)]
    long_job = "j" * 250  # a full trim of a job with a long name: more than the budget
    big = Step(2000, tuple(Op("delete", path_of(long_job, k)) for k in range(TRIM_SCAN)))
    assert big.size() > MULTI_BYTES
    multis = list(chunked([*small[:10], big, *small[10:]]))

    flat = [step for multi in multis for step in multi]
    assert [s.index for s in flat] == [*range(10), 2000, *range(10, 2000)]
    assert [big] in [list(m) for m in multis]
    for multi in multis:
        assert len(multi) <= MULTI_RUNS
        assert len(multi) == 1 or sum(s.size() for s in multi) <= MULTI_BYTES
    assert big.size() < 1024 * 1024 - 1, "one claim with a full trim must fit jute.maxbuffer"


def test_a_fire_given_twice_writes_once() -> None:
    """The second run of a fire meets the node its first run planned: same attempt answers
    that record, another attempt None; only one create is planned."""
    first = RunRecord("j", BASE, "r1", 1, BASE)
    rival = RunRecord("j", BASE, "r1", 1, BASE + timedelta(seconds=1))
    answers, steps = plan_claims([first, first, rival], Retention(), {"j": JobNodes([])}, path_of)
    assert answers == [first, first, None]
    assert [op.kind for s in steps for op in s.ops] == ["create"]


def test_claims_of_an_unlisted_history_create_without_trims_and_refuse_a_due_trim() -> None:
    """A job known only by a bound on its children (not listed) is claimed with creates
    alone while the bound stays within the limit; a plan that would need a trim refuses."""
    runs = [RunRecord("j", from_fire_key(k), "r1", 1, BASE) for k in (10_000, 11_000)]

    answers, steps = plan_claims(runs, Retention(limit=5), {"j": JobNodes([], unlisted=3)}, path_of)

    assert answers == runs
    assert [[op.kind for op in step.ops] for step in steps] == [["create"], ["create"]]
    with pytest.raises(ValueError, match="trim"):
        plan_claims(runs, Retention(limit=4), {"j": JobNodes([], unlisted=3)}, path_of)
