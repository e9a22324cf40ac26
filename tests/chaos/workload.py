"""The chaos workload: three jobs and two leadership hooks, all recording to the ledger.

Loaded by every replica through ``BATON_JOBS=tests.chaos.workload``; the ledger's socket
comes from ``BATON_CHAOS_LEDGER``. Each job invocation writes rows carrying (job, scheduled
tick, fencing token, replica, run id) and the ledger stamps them with real time.

* ``chaos.tick``: every second, a start and an end write (thread isolation,
  ``catch_up="all"``): the tick accounting.
* ``chaos.counter``: every second, a slow read-modify-write of a counter through fenced
  ``read`` and ``store`` (thread isolation, ``catch_up="latest"``): a lost update shows
  broken mutual exclusion.
* ``chaos.long``: every 5 s, works for ``LONG_WORK`` seconds (longer than the lease TTL the
  suite runs with), writing progress every half second; ``isolation="process"``, so its
  child process is ended when the term ends or the lease's local deadline passes.

A job that finds its write refused stops at once: the fence has told it that it was deposed.

**Many jobs** (``BATON_CHAOS_MANY_JOBS=N``, ``python -m tests.chaos.run --many-jobs N``): N
more jobs, the *crowd* (``crowd.j00000``, ...), all due together every
:data:`CROWD_EVERY` (thread isolation, ``catch_up`` ``none``, ``latest`` and ``all`` in
turn). They do nothing and write nothing: they load the leader (one burst of N fires every
10 s: claims, starts, lanes, the pool, the catch-up's reads) while the three jobs above are
checked, with every invariant of the checker unchanged. Their names sort after ``chaos.*``,
so a batch log line that lists its first jobs (``start_failed``) still names those.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from scheduler import (
    JobContext,
    LeadershipAcquiredEvent,
    LeadershipLostEvent,
    on_leadership_acquired,
    on_leadership_lost,
    singleton_job,
)
from tests.chaos.ledger import LedgerClient

#: The jobs and their schedules, for the checker: name -> (interval s, catch_up, grace s).
JOBS: dict[str, tuple[float, str, float]] = {
    "chaos.tick": (1.0, "all", 30.0),
    "chaos.counter": (1.0, "latest", 10.0),
    "chaos.long": (5.0, "none", 10.0),
}
#: Seconds chaos.long works (the suite's lease TTL is 2 s).
LONG_WORK = 3.0
#: Seconds between chaos.counter's read and its store.
COUNTER_GAP = 0.4
#: How many crowd jobs (the many-jobs workload; 0: none).
CROWD = int(os.environ.get("BATON_CHAOS_MANY_JOBS", "0") or "0")
#: The crowd's common interval: every crowd job falls due at the same instants.
CROWD_EVERY = "10s"
#: The crowd's catch_up policies, in turn.
CROWD_POLICIES = ("none", "latest", "all")

_client: LedgerClient | None = None


def ledger() -> LedgerClient:
    """This process's ledger client (a job's child process opens its own)."""
    global _client
    if _client is None:
        _client = LedgerClient(os.environ["BATON_CHAOS_LEDGER"])
    return _client


class Fenced(Exception):
    """The ledger refused a write: this run's token is stale."""


class _Run:
    """One job invocation's writes, all carrying the same identity."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.common: dict[str, Any] = {
            "resource": ctx.job,
            "job": ctx.job,
            "tick": ctx.scheduled_time.isoformat(),
            "run": uuid.uuid4().hex,
            "replica": ctx.replica_id,
            "token": ctx.fencing_token,
            "pid": os.getpid(),
        }

    def call(self, op: str, phase: str, **extra: Any) -> dict[str, Any]:
        answer = ledger().call(op=op, phase=phase, local=time.time(), **self.common, **extra)
        if not answer["accepted"]:
            raise Fenced(phase)
        return answer

    def write(self, phase: str, note: str = "") -> None:
        self.call("write", phase, note=note)


@singleton_job(every="1s", name="chaos.tick", catch_up="all", misfire_grace=30)
def tick(ctx: JobContext) -> None:
    """A start and an end write, 50 ms apart."""
    run = _Run(ctx)
    try:
        run.write("start")
        time.sleep(0.05)
        run.write("end")
    except Fenced:
        return


@singleton_job(every="1s", name="chaos.counter", catch_up="latest", misfire_grace=10)
def counter(ctx: JobContext) -> None:
    """Read the counter, wait, store it plus one: every access fenced."""
    run = _Run(ctx)
    try:
        run.write("start")
        value = int(run.call("read", "read")["value"])
        time.sleep(COUNTER_GAP)
        ctx.check()  # the recommended habit; the fence is what makes it safe
        run.call("store", "store", value=value + 1)
        run.write("end")
    except Fenced:
        return


@singleton_job(
    every="5s", name="chaos.long", catch_up="none", misfire_grace=10, isolation="process"
)
def long_job(ctx: JobContext) -> None:
    """Work LONG_WORK seconds (longer than the lease TTL), a progress write every 0.5 s."""
    run = _Run(ctx)
    try:
        run.write("start")
        steps = round(LONG_WORK / 0.5)
        for step in range(steps):
            time.sleep(0.5)
            run.write("progress", note=str(step + 1))
        run.write("end")
    except Fenced:
        return


@on_leadership_acquired
def note_acquired(event: LeadershipAcquiredEvent) -> None:
    """Record the new term in the ledger (real time), for failover times."""
    ledger().call(
        op="event",
        phase="acquired",
        replica=event.replica_id,
        token=event.token,
        pid=os.getpid(),
        local=time.time(),
    )


@on_leadership_lost
def note_lost(event: LeadershipLostEvent) -> None:
    """Record the end of a term and its reason."""
    ledger().call(
        op="event",
        phase="lost",
        replica=event.replica_id,
        token=event.token,
        pid=os.getpid(),
        local=time.time(),
        note=event.reason,
    )


def _crowd_job(index: int) -> None:
    """Define crowd job number ``index`` (one function object per job: @singleton_job
    refuses to decorate a function twice)."""

    def crowd(ctx: JobContext) -> None:
        """Does nothing: the crowd loads the scheduler, not the ledger."""

    policy = CROWD_POLICIES[index % len(CROWD_POLICIES)]
    singleton_job(every=CROWD_EVERY, name=f"crowd.j{index:05d}", catch_up=policy, misfire_grace=10)(
        crowd
    )


for _index in range(CROWD):
    _crowd_job(_index)
