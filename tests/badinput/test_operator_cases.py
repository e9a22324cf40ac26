"""Bad-input catalogue: operator commands ``pause``, ``resume`` and ``resign`` (README, "Running
replicas" and "Exit codes").

A case that needs a cluster finds one already in the backend: a :data:`Seed` writes the
leader's lease, the presence records (with the jobs each replica announces) and controls,
as live replicas would have, to a real backend (the embedded one at ``{tmp}/baton.db``, or
the session's Redis for ``{redis}``). No replica runs, so each case takes well under a
second, and a handover never happens (``resign`` waits for one in vain). Each case has its
own cluster name, ``{cluster}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler.backends import LeaseBackend, from_url
from scheduler.leadership.controls import PAUSE_PREFIX
from scheduler.leadership.lease import Holder
from scheduler.leadership.members import Member
from tests.badinput.harness import Case, check
from tests.harness.redis_server import RedisServer

SQLITE = "sqlite:///{tmp}/baton.db"
#: The jobs every seeded replica announces.
JOBS = ("billing.reconcile", "reports.daily")
#: Seconds seeded leases and presence records live: longer than any case.
TTL = 120.0

JOBS_MODULE = """\
from scheduler import singleton_job

@singleton_job(every="1h", name="billing.reconcile")
def reconcile(ctx):
    pass
"""

Seed = Callable[[LeaseBackend, str], None]


def _member(replica_id: str, jobs: tuple[str, ...] | None = JOBS) -> Member:
    now = datetime.now(UTC)
    return Member(replica_id, "host-" + replica_id, "0.1.0", now, now, jobs)


def empty(backend: LeaseBackend, cluster: str) -> None:
    """No leader, no live replica (an empty database)."""
    backend.check()  # creates it, as a replica's start would


def alone(backend: LeaseBackend, cluster: str) -> None:
    """r1 leads and is the only live replica."""
    assert backend.try_acquire(cluster, Holder.new("r1"), TTL) is not None
    backend.announce(cluster, _member("r1"), TTL)


def pair(backend: LeaseBackend, cluster: str) -> None:
    """r1 leads, r2 follows (neither acts: nobody takes over on a resign)."""
    alone(backend, cluster)
    backend.announce(cluster, _member("r2"), TTL)


def paused(backend: LeaseBackend, cluster: str) -> None:
    """As :func:`alone`, with billing.reconcile and old.job (no longer in any code) paused."""
    alone(backend, cluster)
    backend.set_control(cluster, PAUSE_PREFIX + "billing.reconcile", '{"by": "op@h"}')
    backend.set_control(cluster, PAUSE_PREFIX + "old.job", '{"by": "op@h"}')


def old_version(backend: LeaseBackend, cluster: str) -> None:
    """r1 leads, but runs a Baton that does not announce its jobs."""
    assert backend.try_acquire(cluster, Holder.new("r1"), TTL) is not None
    backend.announce(cluster, _member("r1", None), TTL)


@dataclass(frozen=True)
class Op:
    """A catalogue case and the cluster state it runs against."""

    case: Case
    seed: Seed = empty
    backend: str = SQLITE


def op(
    id: str,
    *args: str,
    exit: int,
    seed: Seed = empty,
    backend: str = SQLITE,
    says: str = "",
    lines: int | None = 1,
    jobs: str | None = None,
) -> Op:
    """``baton ARGS --backend BACKEND --cluster {cluster}`` against ``seed``."""
    full = (*args, "--backend", backend, "--cluster", "{cluster}")
    return Op(Case(id, full, exit=exit, says=says, lines=lines, jobs=jobs), seed, backend)


LONG = "x" * 201
#: What a name outside the job-name rule is told (scheduler.jobs.spec.JOB_NAME_RULE).
RULE = "ASCII letters"
#: Under Linux's 128 KiB limit for one argument, far over any job name.
HUGE = "j" * 100_000

CASES = [
    # -- job names: checked at the edge, before the backend is opened ----------------------
    op("pause-no-name", "pause", exit=2, says="missing argument 'JOB'"),
    op("pause-slash", "pause", "billing/reconcile", exit=2, says=RULE),
    op("pause-non-ascii", "pause", "bïlling", exit=2, says=RULE),
    op("pause-bidi-override", "pause", "job\u202egnp.exe", exit=2, says=RULE),
    op("pause-empty-name", "pause", "", exit=2, says="must not be empty"),
    op("resume-empty-name", "resume", "", exit=2, says="must not be empty"),
    op("pause-name-201-chars", "pause", LONG, exit=2, says="1 to 200"),
    op("pause-name-100k-chars", "pause", HUGE, exit=2, says="1 to 200"),
    op("resume-name-201-chars", "resume", LONG, exit=2, says="1 to 200"),
    op("pause-name-newline", "pause", "billing.reconcile\nx", exit=2, says=RULE),
    op("pause-name-space", "pause", "billing reconcile", exit=2, says=RULE),
    op("pause-name-tab", "pause", "billing\treconcile", exit=2, says=RULE),
    op("pause-name-escape", "pause", "\x1b[31mred", exit=2, says=RULE),
    op("resume-name-newline", "resume", "a\nb", exit=2, says=RULE),
    # -- names no job has: exit 2 with a did-you-mean ---------------------------------------
    op(
        "pause-typo",
        "pause",
        "billing.reconcil",
        exit=2,
        seed=alone,
        says="did you mean 'billing.reconcile'",
    ),
    op(
        "resume-typo",
        "resume",
        "reports.dialy",
        exit=2,
        seed=alone,
        says="did you mean 'reports.daily'",
    ),
    op("pause-unknown-no-match", "pause", "zzz", exit=2, seed=alone, says="no job named 'zzz'"),
    op("pause-json-typo", "pause", "reports.daily2", "--json", exit=2, seed=alone, says="mean"),
    op(
        "pause-typo-redis",
        "pause",
        "billing.recon",
        exit=2,
        seed=alone,
        backend="{redis}",
        says="did you mean 'billing.reconcile'",
    ),
    op(
        "pause-typo-from-jobs-module",
        "pause",
        "billing.reconcle",
        "--jobs",
        "badjobs",
        exit=2,
        jobs=JOBS_MODULE,
        says="did you mean 'billing.reconcile'",
    ),
    op("pause-nobody-announces", "pause", "billing.reconcile", exit=2, says="pass --jobs"),
    op(
        "pause-old-replicas-announce-nothing",
        "pause",
        "billing.reconcile",
        exit=2,
        seed=old_version,
        says="pass --jobs",
    ),
    op("pause-paused-job-no-longer-in-code", "pause", "old.job", exit=2, seed=paused),
    op(
        "pause-missing-jobs-module", "pause", "x.y", "--jobs", "nosuchmod", exit=2, says="nosuchmod"
    ),
    # -- names that are a job's: fine, and idempotent ---------------------------------------
    op("pause-known", "pause", "billing.reconcile", exit=0, seed=alone),
    op("pause-already-paused", "pause", "billing.reconcile", exit=0, seed=paused),
    op("resume-not-paused", "resume", "reports.daily", exit=0, seed=alone),
    op("resume-job-no-longer-in-code", "resume", "old.job", exit=0, seed=paused),
    op(
        "pause-known-from-jobs-module",
        "pause",
        "billing.reconcile",
        "--jobs",
        "badjobs",
        exit=0,
        jobs=JOBS_MODULE,
    ),
    # -- resign --wait: a finite number of seconds from 0 to 3600 ---------------------------
    op("resign-wait-nan", "resign", "--wait", "nan", exit=2, says="--wait"),
    op("resign-wait-inf", "resign", "--wait", "inf", exit=2, says="--wait"),
    op("resign-wait-minus-inf", "resign", "--wait", "-inf", exit=2, says="--wait"),
    op("resign-wait-negative", "resign", "--wait", "-1", exit=2, says="--wait"),
    op("resign-wait-huge", "resign", "--wait", "1e9", exit=2, says="--wait"),
    op("resign-wait-overflow", "resign", "--wait", "1e400", exit=2, says="--wait"),
    op("resign-wait-over-an-hour", "resign", "--wait", "3601", exit=2, says="--wait"),
    op("resign-wait-word", "resign", "--wait", "soon", exit=2, says="--wait"),
    op("resign-wait-empty", "resign", "--wait", "", exit=2, says="--wait"),
    op("resign-wait-missing-value", "resign", "--wait", exit=2, lines=1),
    # -- resign that would not take effect: exit 1, at once ---------------------------------
    op("resign-no-other-replica", "resign", exit=1, seed=alone, says="no other live replica"),
    op(
        "resign-no-other-replica-redis",
        "resign",
        exit=1,
        seed=alone,
        backend="{redis}",
        says="no other live replica",
    ),
    op("resign-no-leader", "resign", exit=1, says="no leader"),
    op(
        "resign-nobody-takes-over",
        "resign",
        "--wait",
        "0.5",
        exit=1,
        seed=pair,
        lines=None,  # progress lines, then the error
        says="no other replica took over",
    ),
    op("resign-no-wait", "resign", "--wait", "0", exit=0, seed=pair),
    op(
        "resign-backend-unreachable",
        "resign",
        exit=1,
        backend="redis://127.0.0.1:{dead_port}/0",
        says="backend",
    ),
    op(
        "pause-backend-unreachable",
        "pause",
        "billing.reconcile",
        exit=1,
        backend="redis://127.0.0.1:{dead_port}/0",
        says="backend",
    ),
]


def _seed(item: Op, cluster: str, tmp: Path, request: pytest.FixtureRequest) -> None:
    if "{dead_port}" in item.backend:
        return
    url = item.backend.replace("{tmp}", str(tmp))  # opening creates an empty database
    if "{redis}" in url:
        server: RedisServer = request.getfixturevalue("redis_server")
        url = url.replace("{redis}", server.url)
    backend = from_url(url, op_timeout=2.0)
    try:
        item.seed(backend, cluster)
    finally:
        backend.close()


@pytest.mark.parametrize("item", CASES, ids=lambda o: o.case.id)
def test_operator_input(item: Op, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One clear line and the right exit code for pause/resume/resign, no traceback."""
    cluster = f"ops-{uuid.uuid4().hex[:12]}"
    _seed(item, cluster, tmp_path, request)
    args = tuple(a.replace("{cluster}", cluster) for a in item.case.args)
    check(replace(item.case, args=args, timeout=20.0), tmp_path, request)
