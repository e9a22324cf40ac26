"""etcd rows (issue 18): Baton's etcd backend vs tooz's etcd3gw lock and ``etcdctl elect``.

One etcd member (the test harness's: heartbeat 50 ms, election timeout 500 ms) serves every
measurement. Contenders: Baton replicas (``python -m scheduler run``, lease_ttl 2 s); OpenStack
tooz's lock through its ``etcd3gw`` driver (``lock_timeout=2``: the same TTL), the Python peer;
and ``etcdctl elect`` (Go, ``client/v3/concurrency``'s Election), the reference for what a
client of etcd can do at best (its session TTL is fixed at 60 s, so it takes part in the
graceful handover only). Repetitions alternate between the contenders.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks import cycles, failover
from benchmarks.contenders import BatonGroup, ExpiryProbe, Group, RefGroup, ThreadProbe
from benchmarks.failover import Rep
from benchmarks.report import Section, Table, verdict
from benchmarks.stats import latency_cells, ms, percentile
from benchmarks.zookeeper import claim_latencies
from scheduler.backends import from_url
from scheduler.backends.etcd.gateway import b64, prefix_end, unb64

TITLE = "11. etcd backend vs tooz (etcd3gw) and etcdctl elect"
#: Lease TTL of Baton and of tooz's lock, seconds (etcd's minimum with its defaults).
TTL = 2.0
#: Issue 18 targets.
HANDOVER_P50_TARGET = 0.020
AFTER_EXPIRY_TARGET = 0.100
CLAIM_P99_TARGET = 0.010

BATON = "Baton, etcd backend"
TOOZ = "tooz lock, etcd3gw driver (Python reference)"
ELECT = "etcdctl elect (Go reference)"
#: The election key prefix of ``etcdctl elect`` and tooz's lock key prefix.
ELECT_NAME = "bench-elect"
TOOZ_LOCK = "bench-tooz"


class Etcd:
    """Raw reads of the benchmark's etcd member."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.client = httpx.Client(trust_env=False, timeout=5.0)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.post(f"{self.base}/v3/{path}", json=body).json()
        return answer

    def get(self, key: str) -> dict[str, Any] | None:
        kvs = self.call("kv/range", {"key": b64(key)}).get("kvs", [])
        return kvs[0] if kvs else None

    def first_under(self, prefix: str) -> dict[str, Any] | None:
        """The key under ``prefix`` created first (the leader of an etcdctl election)."""
        body = {
            "key": b64(prefix),
            "range_end": prefix_end(prefix),
            "sort_order": "ASCEND",
            "sort_target": "CREATE",
            "limit": "1",
        }
        kvs = self.call("kv/range", body).get("kvs", [])
        return kvs[0] if kvs else None

    def count_under(self, prefix: str) -> int:
        body = {"key": b64(prefix), "range_end": prefix_end(prefix), "count_only": True}
        return int(self.call("kv/range", body).get("count", 0))

    def close(self) -> None:
        self.client.close()


class DeletionProbe(ThreadProbe):
    """kill -9 of a holder: when etcd deleted its key (its lease expired), seen by a watch
    opened just before the kill, as the contenders' own watches see it."""

    def __init__(self, base: str, key: str) -> None:
        self._base = base
        self._key = key
        self._ready = threading.Event()
        super().__init__("deletion-probe")
        self._ready.wait(5.0)

    def _run(self) -> None:
        body = {"create_request": {"key": b64(self._key), "filters": ["NOPUT"]}}
        timeout = httpx.Timeout(5.0, read=30.0)
        with (
            httpx.Client(trust_env=False) as client,
            client.stream("POST", f"{self._base}/v3/watch", json=body, timeout=timeout) as answer,
        ):
            for line in answer.iter_lines():
                result = json.loads(line).get("result", {})
                if result.get("created"):
                    self._ready.set()
                if result.get("events"):
                    self._expiry = time.time()
                    return


class BatonEtcdGroup(BatonGroup):
    """Baton replicas on etcd, with the leader key's deletion as the kill -9 probe."""

    def __init__(self, base: str, url: str, cluster: str, workdir: Path) -> None:
        super().__init__(BATON, url, cluster, workdir, ["e1", "e2"], {"lease_ttl": TTL})
        self.base = base
        self.key = f"/baton/{cluster}/lease/holder"

    def expiry_probe(self, name: str) -> ExpiryProbe:
        return DeletionProbe(self.base, self.key)


class ToozEtcdGroup(RefGroup):
    """tooz's lock on etcd (``tooz_etcd_lock_ref``); the lock key's value names the holder."""

    ident_field = "value"

    def __init__(self, etcd: Etcd, port: int, workdir: Path) -> None:
        super().__init__(TOOZ, "benchmarks.tooz_etcd_lock_ref", workdir, ["z1", "z2"])
        self.etcd = etcd
        self.url = f"etcd3+http://127.0.0.1:{port}?lock_timeout={TTL:g}&timeout={TTL:g}"
        self.key = f"/tooz/locks{TOOZ_LOCK}"

    def args(self, name: str) -> list[str]:
        return ["--url", self.url, "--name", TOOZ_LOCK, "--member", name]

    def leader(self) -> tuple[str, str] | None:
        kv = self.etcd.get(self.key)
        return None if kv is None else self.holder(str(kv.get("value", "")))

    def ready(self, leader: str) -> bool:
        return self.started(leader)

    def expiry_probe(self, name: str) -> ExpiryProbe:
        return DeletionProbe(self.etcd.base, self.key)


class ElectGroup(RefGroup):
    """``etcdctl elect`` contenders (``etcdctl_elect_ref``); the first key under the
    election's prefix leads. Graceful handover only (etcdctl's session TTL is 60 s)."""

    ident_field = "key"

    def __init__(self, etcd: Etcd, port: int, workdir: Path) -> None:
        super().__init__(ELECT, "benchmarks.etcdctl_elect_ref", workdir, ["g1", "g2"])
        self.etcd = etcd
        self.endpoints = f"127.0.0.1:{port}"

    def args(self, name: str) -> list[str]:
        return ["--endpoints", self.endpoints, "--name", ELECT_NAME, "--proposal", name]

    def leader(self) -> tuple[str, str] | None:
        kv = self.etcd.first_under(ELECT_NAME + "/")
        return None if kv is None else self.holder(unb64(kv["key"]))

    def ready(self, leader: str) -> bool:
        # Every contender has its key: the follower is queued behind the leader's.
        return self.started(leader) and self.etcd.count_under(ELECT_NAME + "/") == len(self.names)

    def expiry_probe(self, name: str) -> ExpiryProbe:
        raise RuntimeError("etcdctl elect is measured on graceful handovers only")


def missing() -> str | None:
    """Why the etcd rows cannot be measured, or ``None`` when they can."""
    try:
        import etcd3gw  # noqa: F401
        import tooz  # noqa: F401
    except ImportError as exc:
        return f"tooz or etcd3gw is not installed ({exc}); pip install -e '.[dev]'"
    for program in ("/usr/bin/etcd", "/usr/bin/etcdctl"):
        if not Path(program).exists():
            return f"{program} is missing (scripts/ensure-servers.sh)"
    return None


def _handover_judge(p50: float) -> tuple[str, str]:
    return f"p50 < {ms(HANDOVER_P50_TARGET, 0)}", verdict(p50 < HANDOVER_P50_TARGET)


def _handover_table(term: dict[str, list[Rep]]) -> Table:
    rows = [(BATON, term[BATON], _handover_judge), (TOOZ, term[TOOZ], None)]
    return failover.handover_table([*rows, (ELECT, term[ELECT], None)])


def _kill_table(kill: dict[str, list[Rep]]) -> Table:
    rows = [(BATON, kill[BATON], "target"), (TOOZ, kill[TOOZ], "reference")]
    return failover.kill_table(rows, "etcd deletes the key", "after that", AFTER_EXPIRY_TARGET)


def run(quick: bool, base: Path) -> Section:
    section = Section("etcd", TITLE)
    reason = missing()
    if reason is not None:
        return section.not_measured("etcd rows", "issue 18 targets", reason)
    from tests.harness.etcd_server import EtcdCluster

    reps = 3 if quick else 10
    claims = 50 if quick else 1000
    n, seconds = (2, 0.5) if quick else (10, 1.0)
    server = EtcdCluster(size=1).start()
    member = server.members[0]
    etcd = Etcd(member.client_url)
    groups: list[Group] = []
    try:
        url = server.url()
        baton = BatonEtcdGroup(member.client_url, url, "bench-etcd", base / "baton")
        tooz_group = ToozEtcdGroup(etcd, member.port, base / "tooz")
        elect = ElectGroup(etcd, member.port, base / "elect")
        groups = [baton, tooz_group, elect]
        try:
            for group in groups:
                group.start()
            timeout = TTL + 15.0
            graceful = failover.measure(groups, {signal.SIGTERM: reps, signal.SIGKILL: 0}, timeout)
            killed = failover.measure(
                [baton, tooz_group], {signal.SIGTERM: 0, signal.SIGKILL: reps}, timeout
            )
        finally:
            for group in groups:
                group.close()

        backend = from_url(url, op_timeout=2.0)
        try:
            latencies = claim_latencies(backend, "bench-claims", claims)
            tooz_url = f"etcd3+http://127.0.0.1:{member.port}?lock_timeout={TTL:g}"
            tooz_run, tooz_stop = cycles.tooz_cycle(tooz_url, "bench-cycles-tooz")
            try:
                rates = cycles.rounds(
                    {"baton": cycles.baton_cycle(backend, "bench-cycles"), "tooz": tooz_run},
                    n,
                    seconds,
                )
            finally:
                tooz_stop()
        finally:
            backend.close()
    finally:
        etcd.close()
        server.cleanup()

    term = {label: graceful[label][signal.SIGTERM] for label in (BATON, TOOZ, ELECT)}
    kill = {label: killed[label][signal.SIGKILL] for label in (BATON, TOOZ)}
    baton_term = percentile([r.failover for r in term[BATON]], 50)
    tooz_term = percentile([r.failover for r in term[TOOZ]], 50)
    elect_term = percentile([r.failover for r in term[ELECT]], 50)
    after = [r.after_expiry for r in kill[BATON] if r.after_expiry is not None]
    tooz_after = [r.after_expiry for r in kill[TOOZ] if r.after_expiry is not None]

    claim_table = Table(["Call", "p50", "p99", "max", "n", "Target", "Result"])
    p99 = percentile(latencies, 99)
    claim_table.add(
        "Baton EtcdBackend.claim (one fire; one read + one txn)",
        *latency_cells(latencies),
        f"p99 < {ms(CLAIM_P99_TARGET, 0)}",
        verdict(p99 < CLAIM_P99_TARGET),
    )
    baton_rate = percentile(rates["baton"], 50)
    tooz_rate = percentile(rates["tooz"], 50)
    rate_table = cycles.tooz_table(
        "Baton EtcdBackend try_acquire + release (lease grant, guarded txn; release txn)",
        rates,
    )
    section.tables = [_handover_table(term), _kill_table(kill), claim_table, rate_table]
    section.method = [
        f"failover: two processes per contender on one etcd member; Baton replicas with "
        f"lease_ttl {TTL:g} s (renew every ttl/3), followers watching the leader key; tooz "
        f"contenders run get_lock(name).acquire(blocking=True) with lock_timeout={TTL:g} "
        "(a lease of that TTL per attempt, attempts retried with an exponential wait capped "
        "at 1 s), and on SIGTERM release(); etcdctl elect contenders get SIGINT (on which "
        "etcdctl resigns) through a wrapper that timestamps etcdctl's output; failover = the "
        "new leader's own timestamp of taking the lead minus the moment the signal was sent; "
        f"{reps} graceful repetitions per contender, then {reps} kill -9 repetitions for "
        "Baton and tooz, alternating;",
        "kill -9, etcd lets go: the moment a watch opened just before the kill sees the "
        "holder's key deleted (etcd's lessor revoked the expired lease);",
        f"claim: {claims} EtcdBackend.claim calls in a loop from one client holding the "
        "lease (a read of the job's record count and oldest records, then one txn: the "
        "leader key's create revision and value, the run key's create revision 0, put + trim "
        "to the newest 100 finished), fires 10 s apart, each then started and finished "
        "untimed; etcd's data on disk (fsync on, etcd's default);",
        f"cycles: one client in the benchmark process, {n} rounds of {seconds:g} s per "
        f"contender, alternating, after {cycles.WARMUP_CYCLES} warm-up cycles.",
    ]
    section.notes = [
        "etcdctl elect's session TTL is fixed at 60 s (no flag), so a kill -9 of its leader "
        "is replaced after a minute: it is measured on the graceful handover, where it shows "
        "what a Go client on the same etcd reaches (its follower watches its predecessor's "
        "key and is woken by etcd).",
        "tooz's lock has no fencing token and no watch: a waiting contender retries its "
        "create with an exponential wait (up to 1 s), granting a new etcd lease at every "
        "attempt (leases are not revoked when the attempt fails; they expire).",
        "etcd counts lease TTLs in whole seconds and its lessor checks expiry every 500 ms: "
        "after a kill -9 the key goes 2 to 2.5 s later, whoever holds it.",
    ]
    section.summarize(
        "etcd graceful handover p50",
        ms(baton_term),
        f"tooz {ms(tooz_term)}, etcdctl elect {ms(elect_term)}",
        f"< {ms(HANDOVER_P50_TARGET, 0)}",
        verdict(baton_term < HANDOVER_P50_TARGET),
    )
    section.summarize(
        "etcd kill -9: new leader after the key's deletion, max",
        ms(max(after)) if after else "—",
        ms(max(tooz_after)) if tooz_after else "—",
        f"≤ {ms(AFTER_EXPIRY_TARGET, 0)}",
        verdict(bool(after) and max(after) <= AFTER_EXPIRY_TARGET),
    )
    section.summarize(
        "etcd claim latency p99",
        ms(p99, 2),
        "—",
        f"< {ms(CLAIM_P99_TARGET, 0)}",
        verdict(p99 < CLAIM_P99_TARGET),
    )
    section.summarize(
        "etcd lease acquire+release cycles/s",
        f"{baton_rate:,.0f}/s",
        f"{tooz_rate:,.0f}/s",
        "≥ tooz",
        verdict(baton_rate >= tooz_rate),
    )
    return section
