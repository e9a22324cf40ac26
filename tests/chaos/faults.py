"""Fault injectors and the seeded schedule that picks them.

Every injector touches only what the suite started (replica and server processes by PID,
the replicas' own proxies and fake clocks, the backend's store through a foreign client on
127.0.0.1) and returns a :class:`FaultRecord` with real (unfaked) wall-clock times:

* ``inject``: when the fault began; ``heal``: when the suite undid it (restart, SIGCONT,
  heal, clock reset); ``ref``: the instant the old leader could no longer lead, from which a
  failover is timed (``inject``, except after a backend restart: the restart);
* ``after``: seconds the fault's effects may outlast ``heal`` (a clock stepped back by X s
  keeps the schedule of that replica X s behind), added to its window.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.chaos.cluster import Replicas
from tests.chaos.faketime import FakeClocks
from tests.chaos.targets import SERVED_FAULTS, Holder, Target

#: Every fault type, in report order.
FAULT_TYPES = (
    "kill_leader",
    "pause_leader",
    "backend_restart",
    "promotion",
    "session_expiry",
    "terminate_backend",
    "sentinel_failover",
    "primary_kill",
    "replication_partition",
    "lagging_promotion",
    "shard_failover",
    "node_kill",
    "member_partition",
    "primary_stop",
    "primary_wipe",
    *SERVED_FAULTS,
)
#: The faults that only a backend's own deployment has, and which backends those are.
_ONLY: dict[str, tuple[tuple[str, ...], str]] = {
    "session_expiry": (("zookeeper",), "ZooKeeper only"),
    "promotion": (("postgresql",), "PostgreSQL only"),
    "terminate_backend": (("postgresql",), "PostgreSQL only"),
    "sentinel_failover": (("sentinel",), "Redis Sentinel only"),
    "primary_kill": (("sentinel",), "Redis Sentinel only"),
    "replication_partition": (("sentinel",), "Redis Sentinel only"),
    "lagging_promotion": (("sentinel",), "Redis Sentinel only"),
    "shard_failover": (("cluster",), "Redis Cluster only"),
    "node_kill": (("cluster",), "Redis Cluster only"),
    "member_partition": (("etcd",), "etcd only"),
    "primary_stop": (("redlock",), "Redlock only"),
    "primary_wipe": (("redlock",), "Redlock only"),
}
_BACKENDS = ("sqlite", "redis", "zookeeper", "postgresql", "sentinel", "cluster", "etcd", "redlock")
#: Why a fault type does not apply to a backend.
NOT_APPLICABLE = {
    ("sqlite", "backend_restart"): "embedded: there is no server to kill",
    ("sqlite", "partition_blackhole"): "embedded: no network between replica and store",
    ("sqlite", "partition_delay"): "embedded: no network between replica and store",
    ("sqlite", "skewed_partition"): "embedded: no network between replica and store",
    ("sentinel", "backend_restart"): "replicated: a kill -9 of the primary is primary_kill "
    "(Sentinel promotes a replica, the old primary rejoins as one)",
    ("cluster", "backend_restart"): "replicated: a kill -9 of the election's shard primary "
    "is node_kill (its replica takes over, the node rejoins as one)",
    **{
        (backend, kind): why
        for kind, (owners, why) in _ONLY.items()
        for backend in _BACKENDS
        if backend not in owners
    },
}


@dataclass
class FaultRecord:
    """One injected fault, for the checker."""

    id: int
    type: str
    victim: str = ""
    old_replica: str = ""
    old_token: int = 0
    inject: float = 0.0
    heal: float = 0.0
    ref: float = 0.0
    after: float = 0.0
    recovered: float = 0.0
    recovery_timed_out: bool = False
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Chaos:
    """What the injectors act on."""

    target: Target
    replicas: Replicas
    clocks: FakeClocks
    rng: random.Random
    ttl: float
    sleep: Callable[[float], None] = time.sleep


def _leader(chaos: Chaos) -> Holder | None:
    """The lease holder if it is one of our live, running replicas."""
    holder = chaos.target.holder()
    if holder is None or not chaos.replicas.alive(holder.replica):
        return None
    if holder.replica in chaos.replicas.paused:
        return None
    return holder


def _record(kind: str, fault_id: int, holder: Holder | None, victim: str) -> FaultRecord:
    now = time.time()
    return FaultRecord(
        id=fault_id,
        type=kind,
        victim=victim,
        old_replica=holder.replica if holder else "",
        old_token=holder.token if holder else 0,
        inject=now,
        ref=now,
    )


def kill_leader(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """kill -9 the leader; restart that replica 0.5-2 s later."""
    holder = _leader(chaos)
    if holder is None:
        return None
    record = _record("kill_leader", fault_id, holder, holder.replica)
    record.params["pid"] = chaos.replicas.kill(holder.replica)
    record.inject = record.ref = time.time()
    down = chaos.rng.uniform(0.5, 2.0)
    record.params["down"] = round(down, 3)
    chaos.sleep(down)
    chaos.replicas.start(holder.replica)
    record.heal = time.time()
    return record


def pause_leader(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """SIGSTOP the leader for longer than the lease TTL, then SIGCONT."""
    holder = _leader(chaos)
    if holder is None:
        return None
    record = _record("pause_leader", fault_id, holder, holder.replica)
    pause = chaos.ttl + chaos.rng.uniform(0.5, 2.0)
    record.params.update(pid=chaos.replicas.pid(holder.replica), seconds=round(pause, 3))
    chaos.replicas.pause(holder.replica)
    record.inject = record.ref = time.time()
    chaos.sleep(pause)
    chaos.replicas.resume(holder.replica)
    record.heal = time.time()
    return record


def backend_restart(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """kill -9 the backend server; restart it 0.5-3 s later (same port)."""
    holder = chaos.target.holder()
    record = _record("backend_restart", fault_id, holder, "server")
    record.params["pid"] = chaos.target.server_pid
    chaos.target.kill_server()
    record.inject = time.time()
    down = chaos.rng.uniform(0.5, 3.0)
    record.params["down"] = round(down, 3)
    chaos.sleep(down)
    chaos.target.restart_server()
    record.heal = record.ref = time.time()
    return record


def promotion(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Fail over to the standby as an HA manager does: fence the primary (kill -9, which
    may lose the WAL not yet streamed, or a fast shutdown, which streams it all), promote
    the standby 0.5-2 s later (a new timeline), then clone a new standby of the new
    primary into the old one's place, so that the next promotion has one too."""
    holder = chaos.target.holder()
    record = _record("promotion", fault_id, holder, "server")
    mode = chaos.rng.choice(("kill", "stop"))
    down = chaos.rng.uniform(0.5, 2.0)
    record.params.update(pid=chaos.target.server_pid, mode=mode, down=round(down, 3))
    chaos.target.fence_primary(crash=mode == "kill")
    record.inject = time.time()
    chaos.sleep(down)
    record.params["timeline"] = chaos.target.promote_standby()
    # As after a restart: from here a new leader can be elected, so failover counts from here.
    record.heal = record.ref = time.time()
    chaos.target.rebuild_standby()
    record.params["standby_rebuilt_in"] = round(time.time() - record.heal, 3)
    return record


def session_expiry(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Make ZooKeeper expire the leader's session (its latch node goes with it)."""
    holder = _leader(chaos)
    if holder is None or not holder.session:
        return None
    record = _record("session_expiry", fault_id, holder, holder.replica)
    record.params["session"] = f"{holder.session:#x}"
    chaos.target.expire_session(holder.session)
    record.heal = time.time()
    return record


def terminate_backend(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """``pg_terminate_backend`` every server connection of the leader (its lease, pool and
    LISTEN connections, found by their application_name), as a DBA or a pooler might."""
    holder = _leader(chaos)
    if holder is None:
        return None
    record = _record("terminate_backend", fault_id, holder, holder.replica)
    record.params["terminated"] = chaos.target.terminate(holder.replica)
    record.heal = time.time()
    return record


def _failed_over(record: FaultRecord) -> None:
    """Times of a failover: the old primary could no longer serve from the injection (a new
    leader needs the new primary first, so failover times include the promotion)."""
    record.ref = record.inject


def sentinel_failover(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """``SENTINEL FAILOVER``: the Sentinels promote a replica, the old primary is made its
    replica; healed once every server replicates from the new primary."""
    holder = chaos.target.holder()
    record = _record("sentinel_failover", fault_id, holder, "server")
    record.params["pid"] = chaos.target.server_pid
    record.params["new_primary"] = chaos.target.failover()  # type: ignore[attr-defined]
    _failed_over(record)
    record.heal = time.time()
    return record


def primary_kill(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """kill -9 the primary (no persistence: its data is gone); the Sentinels promote a
    replica after ``down-after`` (1 s); then the old primary is restarted and Sentinel makes
    it a replica of the new one. Healed once it replicates (the group is whole again)."""
    target: Any = chaos.target
    holder = target.holder()
    record = _record("primary_kill", fault_id, holder, "server")
    record.params["pid"] = target.server_pid
    killed = target.kill_primary()
    record.params["promoted_in"] = round(time.time() - record.inject, 3)
    _failed_over(record)
    target.rejoin(killed)
    record.heal = time.time()
    record.params["rejoined_in"] = round(record.heal - record.inject, 3)
    return record


def replication_partition(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Cut the primary from every replica for 2-8 s (their replication links held, both
    ways; the links stay up, so the replicas still count as connected): with
    ``min_replicas_ack`` auto every acknowledged call then fails (liveness suffers, safety
    must hold). What was held is delivered on heal."""
    target: Any = chaos.target
    holder = target.holder()
    record = _record("replication_partition", fault_id, holder, "replicas")
    seconds = chaos.rng.uniform(2.0, 8.0)
    record.params["seconds"] = round(seconds, 3)
    target.hold_replication()
    record.inject = record.ref = time.time()
    chaos.sleep(seconds)
    target.release_replication()
    record.heal = time.time()
    return record


def lagging_promotion(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Hold one replica's replication link for 0.5-3 s, then have the Sentinels promote
    that very replica (the others get priority 0) while it is still behind: the last lease,
    token and claim writes may be lost (issue 15's regression (a)); the link is released
    after the promotion (its held bytes are dropped with the old link)."""
    target: Any = chaos.target
    holder = target.holder()
    lagging = target.pick_replica(chaos.rng)
    record = _record("lagging_promotion", fault_id, holder, "server")
    lag = chaos.rng.uniform(0.5, 3.0)
    record.params.update(pid=target.server_pid, promoted=target.address(lagging), lag=round(lag, 3))
    target.hold_replication(lagging)
    record.inject = time.time()
    try:
        chaos.sleep(lag)
        target.promote(lagging)
    finally:
        target.release_replication(lagging)
    _failed_over(record)
    record.heal = time.time()
    record.params["promoted_in"] = round(record.heal - record.inject - lag, 3)
    return record


def shard_failover(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """``CLUSTER FAILOVER`` on the replica of the shard holding the election's slot (a
    manual failover: the replica catches up first, then takes over); healed once every
    node agrees."""
    target: Any = chaos.target
    holder = target.holder()
    record = _record("shard_failover", fault_id, holder, "server")
    record.params["pid"] = target.server_pid
    record.params["new_primary"] = target.failover_shard()
    _failed_over(record)
    record.heal = time.time()
    return record


def node_kill(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """kill -9 the primary of the election's shard; its replica takes over after
    ``cluster-node-timeout`` (2 s); then the node is restarted and rejoins as a replica.
    Healed once the cluster agrees again."""
    target: Any = chaos.target
    holder = target.holder()
    record = _record("node_kill", fault_id, holder, "server")
    record.params["pid"] = target.server_pid
    killed = target.kill_shard_primary()
    record.params["promoted_in"] = round(time.time() - record.inject, 3)
    _failed_over(record)
    target.restart_node(killed)
    record.heal = time.time()
    record.params["rejoined_in"] = round(record.heal - record.inject, 3)
    return record


def member_partition(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Stop one etcd member (SIGSTOP; the Raft leader 50%) for 1-5 s: to its peers and to
    the replicas it serves, a member cut off by a blackholing partition. A stopped leader
    is replaced by the others after the election timeout; on SIGCONT it rejoins as a
    follower."""
    target: Any = chaos.target
    holder = target.holder()
    member = target.etcd.leader() if chaos.rng.random() < 0.5 else target.pick_member(chaos.rng)
    record = _record("member_partition", fault_id, holder, "server")
    seconds = chaos.rng.uniform(1.0, 5.0)
    record.params.update(pid=member.pid, member=member.member, seconds=round(seconds, 3))
    member.pause()
    record.inject = record.ref = time.time()
    try:
        chaos.sleep(seconds)
    finally:
        member.resume()
    record.heal = time.time()
    return record


def primary_stop(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Redlock: stop one primary (SIGSTOP) for 1-5 s, as if cut off from every replica;
    a majority of the other two must carry on."""
    target: Any = chaos.target
    holder = target.holder()
    record = _record("primary_stop", fault_id, holder, "server")
    seconds = chaos.rng.uniform(1.0, 5.0)
    server = target.stop_primary(chaos.rng)
    record.params.update(pid=server.pid, port=server.port, seconds=round(seconds, 3))
    record.inject = record.ref = time.time()
    try:
        chaos.sleep(seconds)
    finally:
        target.resume_primary(server)
    record.heal = time.time()
    return record


def primary_wipe(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Redlock: kill -9 one primary, delete its data, restart it empty a TTL plus 0.5-2 s
    later (the delayed restart Redlock asks of a primary without persistence)."""
    target: Any = chaos.target
    holder = target.holder()
    record = _record("primary_wipe", fault_id, holder, "server")
    server = target.wipe_primary(chaos.rng)
    record.inject = time.time()
    down = chaos.ttl + chaos.rng.uniform(0.5, 2.0)
    record.params.update(port=server.port, down=round(down, 3))
    chaos.sleep(down)
    server.start()
    record.heal = record.ref = time.time()
    return record


def _victim(chaos: Chaos, leader_bias: float) -> tuple[str, Holder | None]:
    holder = _leader(chaos)
    names = [n for n in chaos.replicas.names if chaos.replicas.alive(n)]
    if holder is not None and chaos.rng.random() < leader_bias:
        return holder.replica, holder
    return chaos.rng.choice(names), holder


def partition_blackhole(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Cut one replica (the leader, 70%) from the backend for TTL+0.5 to TTL+3 s."""
    victim, holder = _victim(chaos, 0.7)
    record = _record("partition_blackhole", fault_id, holder, victim)
    seconds = chaos.ttl + chaos.rng.uniform(0.5, 3.0)
    record.params["seconds"] = round(seconds, 3)
    links = chaos.target.links(victim)
    for proxy in links:
        proxy.blackhole()
    record.inject = record.ref = time.time()
    chaos.sleep(seconds)
    for proxy in links:
        proxy.heal()
    record.heal = time.time()
    return record


def partition_delay(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Delay every byte between one replica (the leader, 70%) and the backend."""
    victim, holder = _victim(chaos, 0.7)
    record = _record("partition_delay", fault_id, holder, victim)
    latency = chaos.rng.uniform(0.05, 1.0)
    seconds = chaos.rng.uniform(3.0, 6.0)
    record.params.update(latency=round(latency, 3), seconds=round(seconds, 3))
    links = chaos.target.links(victim)
    for proxy in links:
        proxy.delay(latency)
    record.inject = record.ref = time.time()
    chaos.sleep(seconds)
    for proxy in links:
        proxy.heal()
    record.heal = time.time()
    return record


def foreign_delete(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """A foreign client deletes the lease key / latch node / lease row."""
    holder = _leader(chaos)
    if holder is None:
        return None
    record = _record("foreign_delete", fault_id, holder, holder.replica)
    record.params["deleted"] = chaos.target.delete_lease()
    record.inject = record.ref = record.heal = time.time()
    return record


def clock_jump(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Step one replica's clocks (the leader, 60%) by +-2..45 s for 3-6 s, then back."""
    victim, holder = _victim(chaos, 0.6)
    record = _record("clock_jump", fault_id, holder, victim)
    offset = chaos.rng.randint(2, 45) * chaos.rng.choice((-1, 1))
    seconds = chaos.rng.uniform(3.0, 6.0)
    record.params.update(offset=offset, seconds=round(seconds, 3))
    chaos.clocks.set(victim, offset)
    record.inject = record.ref = time.time()
    chaos.sleep(seconds)
    chaos.clocks.set(victim, 0)
    record.heal = time.time()
    record.after = abs(offset)
    return record


def clock_skew(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Give every replica its own clock offset (-15..+15 s) for 4-7 s, then reset."""
    holder = _leader(chaos)
    record = _record("clock_skew", fault_id, holder, "all")
    offsets = {name: chaos.rng.randint(-15, 15) for name in chaos.replicas.names}
    seconds = chaos.rng.uniform(4.0, 7.0)
    record.params.update(offsets=offsets, seconds=round(seconds, 3))
    for name, offset in offsets.items():
        chaos.clocks.set(name, offset)
    record.inject = record.ref = time.time()
    chaos.sleep(seconds)
    chaos.clocks.reset()
    record.heal = time.time()
    record.after = max(abs(o) for o in offsets.values())
    return record


def skewed_partition(chaos: Chaos, fault_id: int) -> FaultRecord | None:
    """Step one replica's clocks (the leader, 60%) by +-2..10 s and, while they are off, cut
    it from the backend (blackhole, or a 0.05-1 s delay) for 1-4 s.

    The four moments differ: offset, then the cut 0.5-2 s later; the clock goes back either
    during the cut or 0.3-2 s after its heal. The schedule injects one fault at a time, so
    no other fault combines two; this is the combination (one replica's clock off *and* its
    link cut) under which a run found a duplicated tick.
    """
    victim, holder = _victim(chaos, 0.6)
    record = _record("skewed_partition", fault_id, holder, victim)
    rng = chaos.rng
    offset = rng.randint(2, 10) * rng.choice((-1, 1))
    lead = rng.uniform(0.5, 2.0)
    cut = rng.uniform(1.0, 4.0)
    mode = rng.choice(("blackhole", "delay"))
    latency = rng.uniform(0.05, 1.0) if mode == "delay" else 0.0
    # Seconds after the cut starts at which the clock goes back: inside the cut, or after it
    # heals; never at the same moment as either end, so neither undo hides the other.
    reset_during = rng.random() < 0.5
    reset = rng.uniform(0.3, cut - 0.3) if reset_during else cut + rng.uniform(0.3, 2.0)
    record.params.update(
        offset=offset,
        mode=mode,
        lead=round(lead, 3),
        seconds=round(cut, 3),
        clock_reset=round(reset, 3),  # seconds after the cut began
    )
    if mode == "delay":
        record.params["latency"] = round(latency, 3)
    links = chaos.target.links(victim)
    chaos.clocks.set(victim, offset)
    # The fault begins with the clock step (it alone can depose a leader whose clock jumped
    # ahead), so the window and the failover are timed from there.
    record.inject = record.ref = time.time()
    chaos.sleep(lead)
    for proxy in links:
        if mode == "blackhole":
            proxy.blackhole()
        else:
            proxy.delay(latency)
    if reset_during:
        chaos.sleep(reset)
        chaos.clocks.set(victim, 0)
        chaos.sleep(cut - reset)
        for proxy in links:
            proxy.heal()
    else:
        chaos.sleep(cut)
        for proxy in links:
            proxy.heal()
        chaos.sleep(reset - cut)
        chaos.clocks.set(victim, 0)
    record.heal = time.time()  # the later of the two undos
    record.after = abs(offset)
    return record


INJECTORS: dict[str, Callable[[Chaos, int], FaultRecord | None]] = {
    "kill_leader": kill_leader,
    "pause_leader": pause_leader,
    "backend_restart": backend_restart,
    "promotion": promotion,
    "session_expiry": session_expiry,
    "terminate_backend": terminate_backend,
    "sentinel_failover": sentinel_failover,
    "primary_kill": primary_kill,
    "replication_partition": replication_partition,
    "lagging_promotion": lagging_promotion,
    "shard_failover": shard_failover,
    "node_kill": node_kill,
    "member_partition": member_partition,
    "primary_stop": primary_stop,
    "primary_wipe": primary_wipe,
    "partition_blackhole": partition_blackhole,
    "partition_delay": partition_delay,
    "foreign_delete": foreign_delete,
    "clock_jump": clock_jump,
    "clock_skew": clock_skew,
    "skewed_partition": skewed_partition,
}


def applicable(kind: str, backend: str) -> bool:
    """Whether fault ``kind`` applies to ``backend``."""
    return (backend, kind) not in NOT_APPLICABLE
