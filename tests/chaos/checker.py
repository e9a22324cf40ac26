"""The chaos checker: reads a run's ledger, fault log and replica logs; asserts invariants.

Definitions (all times are the ledger server's real clock; ``seq`` is its apply order):

* A **run** is one job invocation (its run id): the rows it wrote, accepted or not.
* **Duplicated tick**: a (job, tick) with more than one run, whatever the fence said
  (a deposed leader that ran a tick again is a duplicate even if its writes were refused).
* **Expected ticks**: every tick instant of a job within the measurement window (after
  start-up, before shut-down). **Run**: it has a run with an accepted start. **Fenced out**:
  it has runs but every start was refused. **Missed**: no run at all.
* **Window** of a fault: from its injection (minus one interval) to its heal plus its
  after-effect (a clock stepped back X s) plus ``RECOVERY_BOUND`` (5 s) plus one interval;
  never the observed recovery, which would excuse any outage however long. A missed tick
  must lie in a window (invariant). For ``catch_up="all"`` a missed tick must also be one a
  new leader could not have caught up: due more than ``misfire_grace`` before the next term
  began, or lost with the backend's data (Redis restart without persistence), or refused
  by PostgreSQL's claim epoch after a standby promotion (due before the first term on the
  new timeline began plus the claim allowance, :func:`_claim_epoch_ends`), or refused by
  Redis's claim epoch after a Sentinel or Cluster failover (due up to the epoch's end, read
  from the store after the fault), or due while
  the replicas' clocks disagreed (``CLOCK_FAULTS``), or the one fire a deposed leader had
  claimed when it was hit (claims are at most once) — anything else is reported as
  "not caught up" (invariant).
* **Overlap (invariant)**: two runs of the same job under different tokens whose *accepted*
  writes interleave in ``seq`` order. **Raw overlap (reported)**: their writes, accepted or
  refused, interleave in real time: a deposed leader's job still running.
* **Stale write**: a write whose token is below the highest token the ledger had accepted
  for that resource at that moment. Attempted ones are reported; accepted ones are a
  violation (the checker replays the fence itself rather than trusting the ledger's flag).
* **Lost update**: ``chaos.counter`` stores accepted minus the counter's final value, plus
  any accepted store that did not write previous + 1.
* **Failover time**: from the moment the old leader could no longer lead (the fault's
  ``ref``) to the first ``leadership_acquired`` with a higher token (ledger-stamped hook).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scheduler.backends.postgresql.schema import CLAIM_ALLOWANCE_MS
from scheduler.firing.execution import NOT_CALLED_LOST
from tests.chaos import records
from tests.chaos.faults import FAULT_TYPES, NOT_APPLICABLE
from tests.chaos.ledger import LedgerStore, Row
from tests.chaos.workload import JOBS

#: Fault types after which a new leadership term is expected.
DEPOSING = (
    "kill_leader",
    "pause_leader",
    "backend_restart",
    "promotion",
    "session_expiry",
    "foreign_delete",
    "sentinel_failover",
    "primary_kill",
    "lagging_promotion",
    "shard_failover",
    "node_kill",
)
#: Backends whose Redis fails over to a replica: the first acquisition on the new primary
#: opens a claim epoch (``ACQUIRE_LUA``), which the suite reads from the store; and
#: Redlock, whose acquisition opens one on a primary that restarted (``SEAL_LUA``).
FAILING_OVER_REDIS = frozenset({"sentinel", "cluster", "redlock"})
#: Fault types that move a replica's clock: a catch_up="all" tick missed in their windows is
#: put down to the clocks disagreeing (a leader fires by its own clock; see CHAOS.md F4).
CLOCK_FAULTS = frozenset({"clock_jump", "clock_skew", "skewed_partition"})
#: Replica log events counted in the report.
LOG_EVENTS = (
    "leadership_acquired",
    "leadership_lost",
    "stall_detected",
    "lease_revalidated",
    "claim_refused",
    "claim_failed",
    "fire_missed",
    "fire_already_claimed",
    "fire_abandoned",
    "claim_confirmed",
    "claim_withdrawn",
    "claim_unsettled",
    "catch_up",
    "run_orphaned",
    "job_failed",
    "elector_error",
    "fire_failed",
    "hook_failed",
    "listener_failed",
)
EXAMPLES = 10
#: Seconds after a fault's heal (and after-effect) within which Baton must be back to normal:
#: 2.5 lease TTLs of the suite (failover takes at most TTL + renew_interval, a reconnection
#: after a server restart about a second). Longer outages leave ticks missed outside windows.
RECOVERY_BOUND = 5.0


@dataclass
class Run:
    """One job invocation as the ledger saw it."""

    run: str
    job: str
    tick: str
    token: int
    replica: str
    pid: int
    rows: list[Row] = field(default_factory=list)

    @property
    def accepted(self) -> list[Row]:
        return [r for r in self.rows if r.accepted]

    @property
    def started(self) -> bool:
        return any(r.phase == "start" and r.accepted for r in self.rows)

    def brief(self) -> dict[str, Any]:
        return {
            "run": self.run[:8],
            "tick": self.tick,
            "token": self.token,
            "replica": self.replica,
            "pid": self.pid,
            "first": round(self.rows[0].at, 3),
            "last": round(self.rows[-1].at, 3),
            "writes": [f"{r.seq}:{r.phase}:{'ok' if r.accepted else 'refused'}" for r in self.rows],
        }


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = max(0, math.ceil(q * len(ordered)) - 1)
    return round(ordered[index], 3)


def _tick_instants(start: float, end: float, interval: float) -> list[float]:
    first = math.ceil(start / interval) * interval
    out, t = [], first
    while t <= end:
        out.append(round(t, 6))
        t += interval
    return out


def _instant(tick: str) -> float:
    return round(datetime.fromisoformat(tick).timestamp(), 6)


def _iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat()


def _batch_fires(item: dict[str, Any]) -> set[tuple[str, float]]:
    """The (job, instant) pairs a batch log line names: ``job`` or ``jobs`` (the first ones,
    sorted) by ``scheduled_time`` or ``scheduled_times`` (a batch is usually one instant; with
    several, every pair is taken, which can only excuse more)."""
    jobs = [item["job"]] if item.get("job") else list(item.get("jobs") or [])
    times = (
        [item["scheduled_time"]]
        if item.get("scheduled_time")
        else list(item.get("scheduled_times") or [])
    )
    return {(str(job), _instant(str(at))) for job in jobs for at in times}


def _scan_logs(
    paths: list[str],
) -> tuple[
    dict[str, int], dict[str, int], list[str], set[tuple[str, float]], set[tuple[str, float, str]]
]:
    """Event counts, leadership-loss reasons, the first tracebacks, the fires whose
    ``start`` went unanswered (``start_failed``: (job, instant)), and the fires whose claim
    went unanswered (``claim_failed``: (job, instant, claimant))."""
    events: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    tracebacks: list[str] = []
    unanswered: set[tuple[str, float]] = set()
    claims: set[tuple[str, float, str]] = set()
    for path in paths:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith("{"):
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    continue
                name = item.get("event", "")
                if name in LOG_EVENTS:
                    events[name] += 1
                if name == "leadership_lost":
                    reasons[str(item.get("reason"))] += 1
                if name == "start_failed":
                    unanswered |= _batch_fires(item)
                if name == "claim_failed":
                    replica = str(item.get("replica", ""))
                    claims |= {(job, at, replica) for job, at in _batch_fires(item)}
                if "exception" in item and len(tracebacks) < EXAMPLES:
                    tracebacks.append(f"{Path(path).name}: {name}: {item['exception'][-300:]}")
            elif line.startswith("Traceback") and len(tracebacks) < EXAMPLES:
                tracebacks.append(f"{Path(path).name}: {line}")
    return dict(events), dict(reasons), tracebacks, unanswered, claims


def check(workdir: Path) -> dict[str, Any]:
    """Analyse the run in ``workdir``; writes ``report.json`` and ``report.md`` there."""
    meta = json.loads((workdir / "run.json").read_text())
    faults = [
        json.loads(line)
        for line in (workdir / "faults.jsonl").read_text().splitlines()
        if line.strip()
    ]
    store = LedgerStore(workdir / "ledger.db")
    try:
        rows = store.rows()
        counters = store.counters()
    finally:
        store.close()
    events, reasons, tracebacks, unanswered, claims = _scan_logs(meta.get("logs", []))
    report = analyse(meta, faults, rows, counters, unanswered, claims, records.load(workdir))
    report["replica_logs"] = {
        "events": events,
        "leadership_lost_reasons": reasons,
        "exceptions": tracebacks,
        "unexpected_exits": meta.get("unexpected_exits", []),
    }
    (workdir / "report.json").write_text(json.dumps(report, indent=2))
    (workdir / "report.md").write_text(markdown(report))
    return report


def analyse(
    meta: dict[str, Any],
    faults: list[dict[str, Any]],
    rows: list[Row],
    counters: dict[str, int],
    unanswered_starts: set[tuple[str, float]] | None = None,
    unanswered_claims: set[tuple[str, float, str]] | None = None,
    recorded: dict[tuple[str, float], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The report for one run (pure: the inputs are what the run recorded).

    ``unanswered_starts``: (job, instant) of the fires whose claimant logged
    ``start_failed`` (a start sent and not answered), from the replica logs.
    ``unanswered_claims``: (job, instant, claimant) of the fires whose claimant logged
    ``claim_failed`` (a claim sent and not answered, or not acknowledged by replicas).
    ``recorded``: Baton's own run records of the ``all`` jobs by (job, instant), as the
    run's recorder read them from the store (:mod:`tests.chaos.records`).
    """
    claimants: dict[tuple[str, float], set[str]] = defaultdict(set)
    for job, instant, replica in unanswered_claims or set():
        claimants[(job, instant)].add(replica)
    backend = meta["backend"]
    acquired = [r for r in rows if r.op == "event" and r.phase == "acquired"]
    runs: dict[str, Run] = {}
    for row in rows:
        if row.op == "event":
            continue
        run = runs.get(row.run)
        if run is None:
            run = runs[row.run] = Run(row.run, row.job, row.tick, row.token, row.replica, row.pid)
        run.rows.append(row)

    _claim_epoch_ends(faults, acquired)
    violations: list[str] = []
    measure = (meta.get("measure_start", 0.0), meta.get("measure_end", 0.0))

    # -- fault windows ---------------------------------------------------------------------
    def windows_for(interval: float) -> list[tuple[float, float, dict[str, Any]]]:
        return [(f["inject"] - interval, _window_end(f) + interval, f) for f in faults]

    # -- ticks -----------------------------------------------------------------------------
    by_tick: dict[tuple[str, float], list[Run]] = defaultdict(list)
    for run in runs.values():
        by_tick[(run.job, _instant(run.tick))].append(run)
    ticks_report: dict[str, Any] = {}
    duplicates: list[dict[str, Any]] = []
    for (job, instant), group in sorted(by_tick.items()):
        if len(group) > 1:
            duplicates.append(
                {"job": job, "tick": _iso(instant), "runs": [r.brief() for r in group]}
            )
    for job, (interval, policy, grace) in JOBS.items():
        expected = _tick_instants(measure[0], measure[1], interval)
        windows = windows_for(interval)
        ran = fenced = caught_up = early = 0
        missed: list[dict[str, Any]] = []
        for instant in expected:
            group = by_tick.get((job, instant), [])
            started = [r for r in group if r.started]
            if started:
                ran += 1
                first = min(r.rows[0].at for r in started)
                if first - instant > 1.0:
                    caught_up += 1
                if first < instant - 0.05:
                    early += 1
                continue
            if group:
                fenced += 1
                continue
            inside = [w for w in windows if w[0] <= instant <= w[1]]
            entry: dict[str, Any] = {"tick": _iso(instant), "faults": [w[2]["id"] for w in inside]}
            if not inside:
                entry["verdict"] = "outside any fault window"
            elif policy == "all":
                entry["verdict"] = _all_policy_verdict(
                    instant,
                    interval,
                    grace,
                    inside,
                    acquired,
                    backend,
                    faults,
                    (job, instant) in (unanswered_starts or set()),
                    claimants.get((job, instant), set()),
                    (recorded or {}).get((job, instant)),
                )
            else:
                entry["verdict"] = f"in window (catch_up={policy})"
            missed.append(entry)
        outside = [m for m in missed if m["verdict"] == "outside any fault window"]
        not_caught = [m for m in missed if m["verdict"].startswith("not caught up")]
        ticks_report[job] = {
            "interval": interval,
            "catch_up": policy,
            "misfire_grace": grace,
            "expected": len(expected),
            "run": ran,
            "ran_late_caught_up": caught_up,
            "ran_early": early,
            "fenced_out": fenced,
            "missed": len(missed),
            "missed_in_window": len(missed) - len(outside),
            "missed_outside_window": len(outside),
            "missed_not_caught_up": len(not_caught),
            "missed_by_verdict": dict(Counter(m["verdict"] for m in missed)),
            "missed_examples": missed[:EXAMPLES],
        }
        if outside:
            violations.append(f"{job}: {len(outside)} ticks missed outside any fault window")
        if not_caught:
            violations.append(
                f"{job}: {len(not_caught)} ticks missed that catch_up={policy} should have run"
            )
    if duplicates:
        violations.append(f"{len(duplicates)} ticks ran more than once")

    # -- overlaps --------------------------------------------------------------------------
    overlaps: list[dict[str, Any]] = []
    raw_overlaps: list[dict[str, Any]] = []
    by_job: dict[str, list[Run]] = defaultdict(list)
    for run in runs.values():
        by_job[run.job].append(run)
    for job, group in by_job.items():
        accepted = sorted((r for r in group if r.accepted), key=lambda r: r.accepted[0].seq)
        for a, b in _interleaved(accepted, lambda r: (r.accepted[0].seq, r.accepted[-1].seq)):
            if a.token != b.token or a.replica != b.replica:
                overlaps.append({"job": job, "runs": [a.brief(), b.brief()]})
        everything = sorted(group, key=lambda r: r.rows[0].at)
        for a, b in _interleaved(everything, lambda r: (r.rows[0].at, r.rows[-1].at)):
            if a.token != b.token:
                older, newer = (a, b) if a.token < b.token else (b, a)
                refused = [r for r in older.rows if not r.accepted]
                raw_overlaps.append(
                    {
                        "job": job,
                        "start": max(a.rows[0].at, b.rows[0].at),
                        "kind": "deposed leader still running" if refused else "unfenced",
                        "seconds": round(
                            min(a.rows[-1].at, b.rows[-1].at) - max(a.rows[0].at, b.rows[0].at), 3
                        ),
                        "runs": [older.brief(), newer.brief()],
                    }
                )
    if overlaps:
        violations.append(f"{len(overlaps)} overlaps of accepted work")

    # -- stale writes ----------------------------------------------------------------------
    marks: dict[str, int] = {}
    stale_attempted = stale_accepted = fence_disagreements = 0
    stale_examples: list[dict[str, Any]] = []
    superseded_accepted = 0
    superseded_at: list[float] = []
    terms = sorted((r.at, r.token) for r in acquired)
    for row in rows:
        if row.op == "event":
            continue
        mark = marks.get(row.resource)
        stale = mark is not None and row.token < mark
        if stale:
            stale_attempted += 1
            if row.accepted:
                stale_accepted += 1
                if len(stale_examples) < EXAMPLES:
                    stale_examples.append({"seq": row.seq, "token": row.token, "mark": mark})
        if row.accepted != (not stale):
            fence_disagreements += 1
        if row.accepted:
            marks[row.resource] = max(mark or 0, row.token)
            if any(at < row.at and token > row.token for at, token in terms):
                superseded_accepted += 1
                superseded_at.append(row.at)
    if stale_accepted:
        violations.append(f"{stale_accepted} stale writes accepted")
    if fence_disagreements:
        violations.append(f"{fence_disagreements} ledger fence decisions disagree with a replay")

    # -- lost updates ----------------------------------------------------------------------
    stores = [r for r in rows if r.op == "store" and r.accepted]
    anomalies: list[dict[str, Any]] = []
    previous = 0
    for row in stores:
        if row.value != previous + 1:
            anomalies.append({"seq": row.seq, "stored": row.value, "previous": previous})
        previous = row.value if row.value is not None else previous
    final = counters.get("chaos.counter", 0)
    lost_updates = max(len(stores) - final, len(anomalies))
    if lost_updates:
        violations.append(f"{lost_updates} lost updates of chaos.counter")

    # -- failovers -------------------------------------------------------------------------
    per_type: dict[str, list[float]] = defaultdict(list)
    no_failover: list[int] = []
    for f in faults:
        later = (
            [r for r in acquired if r.token > f["old_token"] and r.at >= f["ref"] - 0.05]
            if f["old_token"]
            else []
        )
        # The first new term after the fault, however late: a slow failover must show.
        changed = later[:1]
        if changed:
            f["failover"] = round(changed[0].at - f["ref"], 3)
            f["new_replica"], f["new_token"] = changed[0].replica, changed[0].token
            per_type[f["type"]].append(f["failover"])
        elif f["type"] in DEPOSING and f["old_token"]:
            no_failover.append(f["id"])
    deposing = [
        f["failover"]
        for f in faults
        if "failover" in f
        and (
            f["type"] in DEPOSING
            or (f["type"] == "partition_blackhole" and f["victim"] == f["old_replica"])
        )
    ]

    # -- how much of the run the windows cover, and the longest stretches without a tick --
    spans = sorted((f["inject"] - 1.0, _window_end(f) + 1.0) for f in faults)
    covered, reach = 0.0, measure[0]
    for lo, hi in spans:
        lo, hi = max(lo, reach), min(hi, measure[1])
        if hi > lo:
            covered += hi - lo
            reach = hi
    starts = sorted(r.rows[0].at for r in runs.values() if r.job == "chaos.tick" and r.started)
    starts = [t for t in starts if measure[0] <= t <= measure[1]]
    gaps = sorted(((b - a, a) for a, b in itertools.pairwise(starts)), reverse=True)[:EXAMPLES]

    faults_by_type = Counter(f["type"] for f in faults)
    report: dict[str, Any] = {
        "backend": backend,
        "seed": meta["seed"],
        "duration": meta["duration"],
        "command": meta.get("command", ""),
        "lease_ttl": meta.get("lease_ttl"),
        "replicas": meta.get("replicas"),
        "measured_seconds": round(measure[1] - measure[0], 1),
        "faults_total": len(faults),
        "faults_by_type": {
            t: faults_by_type.get(t, 0) for t in FAULT_TYPES if t in meta["fault_types"]
        },
        "faults_skipped": {
            t: NOT_APPLICABLE.get((backend, t), "not selected") for t in meta["skipped_fault_types"]
        },
        "recovery_timeouts": [f["id"] for f in faults if f.get("recovery_timed_out")],
        "ticks": ticks_report,
        "duplicated": len(duplicates),
        "duplicated_examples": duplicates[:EXAMPLES],
        "overlaps": len(overlaps),
        "overlap_examples": overlaps[:EXAMPLES],
        "raw_overlaps": len(raw_overlaps),
        "raw_overlaps_by_kind": dict(Counter(o["kind"] for o in raw_overlaps)),
        "raw_overlap_examples": raw_overlaps[:EXAMPLES],
        "stale_attempted": stale_attempted,
        "stale_accepted": stale_accepted,
        "stale_examples": stale_examples,
        "accepted_after_newer_term_began": superseded_accepted,
        "counter": {
            "accepted_stores": len(stores),
            "final": final,
            "anomalies": anomalies[:EXAMPLES],
        },
        "lost_updates": lost_updates,
        "failover": {
            "leader_deposing_faults": len(deposing),
            "p50": _pct(deposing, 0.5),
            "p99": _pct(deposing, 0.99),
            "max": max(deposing) if deposing else None,
            "mean": round(statistics.fmean(deposing), 3) if deposing else None,
            "by_type": {
                t: {"n": len(v), "p50": _pct(v, 0.5), "p99": _pct(v, 0.99), "max": max(v)}
                for t, v in sorted(per_type.items())
            },
            "deposing_faults_without_new_term": no_failover,
        },
        "window_coverage": round(covered / max(1e-9, measure[1] - measure[0]), 3),
        "longest_tick_gaps": [
            {
                "seconds": round(gap, 1),
                "from": _iso(at),
                "faults": [
                    f["id"]
                    for f in faults
                    if f["inject"] - 1.0 <= at + gap and _window_end(f) >= at
                ],
            }
            for gap, at in gaps
        ],
        "by_fault_window": {
            "terms_begun": _attribute([r.at for r in acquired], faults),
            "raw_overlaps": _attribute([o["start"] for o in raw_overlaps], faults),
            "accepted_after_newer_term_began": _attribute(superseded_at, faults),
        },
        "faults": faults,
        "violations": violations,
        "ok": not violations,
    }
    return report


def _claim_epoch_ends(faults: list[dict[str, Any]], acquired: list[Row]) -> None:
    """Set ``claim_epoch_end``: the real time up to which a claim epoch refuses fires
    without a record (claims on the old primary may not have reached the new one).

    PostgreSQL, on every promotion: the first acquisition on the new timeline (a token whose
    high bits are that timeline, see ``scheduler/backends/postgresql/schema.py``) sets it to
    the server's clock plus the claim allowance; the ledger stamps that term's hook after
    the acquisition, on the same host clock, so its stamp plus the allowance bounds it.
    Redis Sentinel and Cluster, on any fault after which the run found a new epoch in the
    store (an acquisition on another server than the last one's, ``ACQUIRE_LUA``): its
    ``high`` as the run read it (the servers run on the host's real clock)."""
    allowance = CLAIM_ALLOWANCE_MS / 1000
    for f in faults:
        # Redis Sentinel / Cluster: the run read the epoch's end (server ms) from the store
        # after the fault's recovery, when an acquisition had opened a new one.
        opened = f.get("params", {}).get("claim_epoch_end")
        if opened:
            f["claim_epoch_end"] = float(opened)
            continue
        timeline = f.get("params", {}).get("timeline")
        if f["type"] != "promotion" or not timeline:
            continue
        first = next((r for r in acquired if r.token >> 40 >= timeline), None)
        if first is not None:
            f["claim_epoch_end"] = round(first.at + allowance, 6)


def _window_end(fault: dict[str, Any]) -> float:
    """Real time by which a fault's effects must be over: its heal, plus its after-effect,
    plus :data:`RECOVERY_BOUND` (not the observed recovery, which would excuse anything)."""
    return float(fault["heal"]) + float(fault.get("after", 0.0)) + RECOVERY_BOUND


def _attribute(instants: list[float], faults: list[dict[str, Any]]) -> dict[str, int]:
    """How many of ``instants`` fall in the window of each fault type ('none' if in none)."""
    out: Counter[str] = Counter()
    for instant in instants:
        kinds = {f["type"] for f in faults if f["inject"] - 1.0 <= instant <= _window_end(f) + 1.0}
        for kind in kinds or {"none"}:
            out[kind] += 1
    return dict(out)


def _all_policy_verdict(
    instant: float,
    interval: float,
    grace: float,
    inside: list[tuple[float, float, dict[str, Any]]],
    acquired: list[Row],
    backend: str,
    faults: list[dict[str, Any]],
    start_unanswered: bool,
    claim_unanswered_by: set[str] | frozenset[str] = frozenset(),
    record: dict[str, Any] | None = None,
) -> str:
    """Why a catch_up="all" tick in a fault window was not run (or that it should have been)."""
    kinds = {w[2]["type"] for w in inside}
    if backend == "redis" and "backend_restart" in kinds:
        return "history lost with Redis data (cold start)"
    if kinds & CLOCK_FAULTS:
        return "clocks disagreed"
    if backend == "postgresql" and any(
        f["type"] == "promotion"
        and instant <= f.get("claim_epoch_end", -math.inf)
        and any(w[2]["id"] == f["id"] or instant <= f["inject"] <= w[1] for w in inside)
        for f in faults
    ):
        # Claims made on the old primary may be missing on the promoted standby, so the
        # first term on the new timeline refuses every fire up to its server clock plus the
        # claim allowance that has no record (the claim epoch, as on Redis after a data
        # loss): the tick was in the promotion's window, or still being recovered from its
        # own fault when the promotion came.
        return "refused by the claim epoch after a standby promotion"
    if backend in FAILING_OVER_REDIS and any(
        instant <= f.get("claim_epoch_end", -math.inf)
        and any(w[2]["id"] == f["id"] or instant <= f["inject"] <= w[1] for w in inside)
        for f in faults
    ):
        # A replica promoted (Sentinel, a Cluster shard) may lack the last claims, so the
        # first acquisition on it refuses every fire without a record up to its clock plus
        # the claim allowance (ACQUIRE_LUA): the tick was in the window of the fault after
        # which that epoch opened, or still being recovered from its own fault then.
        return "refused by the claim epoch after a failover"
    nxt = [r for r in acquired if r.at > instant]
    if not nxt or nxt[0].at - instant > grace - 1.0:
        return "no new term within misfire_grace"
    if start_unanswered:
        # Its claimant sent the start and got no answer before its term ended: the record
        # may say "running" although the job never ran, and a started fire is never given
        # back (CHAOS.md, F11): at most once.
        return "its start went unanswered and its term ended (at most once)"
    if any(
        f["type"] == "kill_leader"
        and f["victim"] in claim_unanswered_by
        and instant <= f["inject"]
        and any(w[2]["id"] == f["id"] or f["inject"] <= w[1] for w in inside)
        for f in faults
    ):
        # Its claimant's claim went unanswered (or unacknowledged: the record may be on the
        # primary), and the claimant was killed while the tick's fault was still open,
        # before it settled the claim: nobody else may run a fire another term claimed
        # (claims are at most once; F10 settles them only in the claimant's own term).
        return "its claim went unanswered and its claimant was killed (at most once)"
    for _, _, f in inside:
        # A killed leader may have claimed this very fire just before it died: the fire in
        # flight is the first one due after the kill. Claims are at most once, and only the
        # claimant could say it never started the job. A leader that survives its fault
        # (paused, cut off, its session expired) gives back a claim it did not start once
        # the backend answers (F10), so its fires must be caught up.
        if f["type"] == "kill_leader" and (
            f["inject"] - 1.5 <= instant <= f["inject"] + interval + 0.5
        ):
            return "claimed by the killed leader (at most once)"
    if (
        record is not None
        and record.get("outcome") == "lost"
        and record.get("message") == NOT_CALLED_LOST
    ):
        # The store has it started (its record went claimed -> running) and then marked
        # lost by its claimant, whose term ended before it called the job (a pause right
        # after the start, say): a started fire is never given back (F11), at most once.
        # Evidence, not timing: Baton's record, read during the run.
        return "started, then its term ended before the job was called (at most once)"
    if record is not None and any(
        f["type"] == "kill_leader"
        and f["victim"] == record["replica_id"]
        and f.get("old_token") == record["token"]
        for f in faults
    ):
        # The store has its claim, by a leader killed before it started the job (its
        # catch-up claimed it, say, a second before the kill): claims are at most once and
        # nobody else may run it. Evidence, not timing: Baton's record, read during the run.
        return "claimed by the killed leader (at most once)"
    if backend == "redis" and any(
        f["type"] == "backend_restart" and instant <= f["inject"] <= w[1]
        for f in faults
        for w in inside
    ):
        # Redis lost its data while this tick was still being recovered from its own fault
        # (a claim in doubt, say): every fire claimable before the loss is refused after it
        # (the claim epoch), so a record that may have been lost is never claimed twice.
        return "history lost with Redis data before its fault was over"
    return "not caught up although a new term began within misfire_grace"


def _interleaved(runs: list[Run], span: Any) -> list[tuple[Run, Run]]:
    """Pairs of runs whose ``span`` intervals intersect (runs sorted by span start)."""
    pairs: list[tuple[Run, Run]] = []
    active: list[Run] = []
    for run in runs:
        start, _ = span(run)
        active = [a for a in active if span(a)[1] > start]
        pairs.extend((a, run) for a in active if a.run != run.run)
        active.append(run)
    return pairs


def markdown(report: dict[str, Any]) -> str:
    """The human-readable report."""
    r = report
    lines = [
        f"### Chaos run: {r['backend']}, seed {r['seed']}, {r['duration']:g} s of faults",
        "",
        f"Reproduce: `{r['command']}`" if r.get("command") else "",
        "",
        f"Verdict: **{'all invariants hold' if r['ok'] else 'VIOLATED'}**"
        + ("" if r["ok"] else ": " + "; ".join(r["violations"])),
        "",
        f"{r['replicas']} replicas, lease TTL {r['lease_ttl']} s; ticks measured over "
        f"{r['measured_seconds']} s.",
        "",
        f"**Faults** ({r['faults_total']} in all):",
        "",
        "| fault | count |",
        "| --- | ---: |",
    ]
    lines += [f"| {t} | {n} |" for t, n in r["faults_by_type"].items()]
    for t, why in r["faults_skipped"].items():
        lines.append(f"| {t} | skipped: {why} |")
    if r["recovery_timeouts"]:
        lines += ["", f"Recovery timed out after faults {r['recovery_timeouts']}."]
    lines += [
        "",
        "**Ticks**:",
        "",
        "| job | catch_up | expected | run | ran late (caught up) | ran early | fenced out "
        "| missed (in window / outside) | not caught up |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for job, t in r["ticks"].items():
        lines.append(
            f"| {job} | {t['catch_up']} | {t['expected']} | {t['run']} | "
            f"{t['ran_late_caught_up']} | {t['ran_early']} | {t['fenced_out']} | "
            f"{t['missed']} ({t['missed_in_window']} / {t['missed_outside_window']}) | "
            f"{t['missed_not_caught_up']} |"
        )
    verdicts = {
        job: t["missed_by_verdict"] for job, t in r["ticks"].items() if t["missed_by_verdict"]
    }
    if verdicts:
        lines += ["", "Missed ticks by reason: " + json.dumps(verdicts)]
    fo = r["failover"]
    gaps = r.get("longest_tick_gaps") or []
    lines += [
        "",
        f"Fault windows cover {100 * r.get('window_coverage', 0):.0f}% of the measured time. "
        "Longest stretches without a chaos.tick start: "
        + ", ".join(f"{g['seconds']} s (faults {g['faults']})" for g in gaps[:5])
        + ".",
    ]
    lines += [
        "",
        "**Invariants**:",
        "",
        "| invariant | value |",
        "| --- | ---: |",
        f"| duplicated ticks | {r['duplicated']} |",
        f"| overlaps of accepted work | {r['overlaps']} |",
        f"| stale writes accepted | {r['stale_accepted']} |",
        f"| lost updates (counter: {r['counter']['accepted_stores']} stores, final "
        f"{r['counter']['final']}) | {r['lost_updates']} |",
        "",
        "**Also measured**: stale writes attempted (refused by the fence) "
        f"{r['stale_attempted']}; raw overlaps (a deposed leader's job still running, its "
        f"writes refused) {r['raw_overlaps']} {r['raw_overlaps_by_kind'] or ''}; writes "
        "accepted from a leader after a newer term had begun (before the new leader's first "
        f"write raised the fence) {r['accepted_after_newer_term_began']}.",
        "",
        f"**Failover** (leader-deposing faults, n={fo['leader_deposing_faults']}): "
        f"p50 {fo['p50']} s, p99 {fo['p99']} s, max {fo['max']} s.",
        "",
        "| fault | n | p50 s | p99 s | max s |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {t} | {v['n']} | {v['p50']} | {v['p99']} | {v['max']} |"
        for t, v in fo["by_type"].items()
    ]
    by_window = r.get("by_fault_window")
    if by_window:
        kinds = sorted({k for v in by_window.values() for k in v})
        lines += [
            "",
            "**Where it happened** (counts inside each fault type's windows; 'none' = outside):",
            "",
            "| | " + " | ".join(kinds) + " |",
            "| --- |" + " ---: |" * len(kinds),
        ]
        for name, counts in by_window.items():
            lines.append(
                f"| {name.replace('_', ' ')} | "
                + " | ".join(str(counts.get(k, 0)) for k in kinds)
                + " |"
            )
    logs = r.get("replica_logs")
    if logs:
        lines += [
            "",
            "**Replica logs**: " + json.dumps(logs["events"], sort_keys=True),
            "",
            "Terms ended by: " + json.dumps(logs["leadership_lost_reasons"], sort_keys=True),
        ]
        if logs["unexpected_exits"]:
            lines += ["", f"Unexpected replica exits: {logs['unexpected_exits']}"]
        if logs["exceptions"]:
            lines += ["", "Exceptions logged (first few):", ""]
            lines += [f"- `{e[:200]}`" for e in logs["exceptions"]]
    return "\n".join(line for line in lines) + "\n"
