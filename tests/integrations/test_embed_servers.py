"""The embedding recipes of config/embed/ under the real server processes: FastAPI under
uvicorn and a WSGI app under gunicorn (both with 2 workers), Django under gunicorn (2
workers, started by its AppConfig), and plain worker processes (a script, and a Django
management command), on the SQLite backend.

What every test demands: each worker process is a replica of its own; each tick of the
plain and the ``async def`` job runs exactly once across all workers (the fenced sink of
tests/harness records who ran what; no tick twice, no write refused); SIGTERM to the server
(uvicorn's or gunicorn's master, as an orchestrator sends it) hands over: a ``baton run``
standby leads within :data:`HANDOVER_TIMEOUT`, well before the :data:`LEASE_TTL` lease could
have expired, so the lease was released; the server exits 0.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.harness.process_server import free_port
from tests.harness.replicas import ROOT, Cluster, sqlite_cluster, wait_for
from tests.harness.sink import Write, read_writes

pytestmark = pytest.mark.slow

RECIPES = ROOT / "config" / "embed"
BIN = Path(sys.executable).parent
#: Seconds: long, so that a new leader within HANDOVER_TIMEOUT proves a released lease.
LEASE_TTL = 30
#: Seconds a standby may take to lead once the server got SIGTERM (a release wakes it in
#: milliseconds; shutdown_grace below bounds the wait for running jobs).
HANDOVER_TIMEOUT = 15.0
SHUTDOWN_GRACE = 3
#: Seconds for a server to boot its workers and their replicas (several Python processes
#: importing a web framework on a loaded 2-core machine).
BOOT_TIMEOUT = 60.0
#: Ticks each job must have run on the server's workers before the handover.
TICKS = 3


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    def get(self, path: str) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                return answer.status, answer.read().decode()
        except OSError:
            return 0, ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: its workers too
                self.proc.wait()


def commands(port: int) -> dict[str, list[str]]:
    bind = f"127.0.0.1:{port}"
    return {
        "uvicorn-fastapi": [
            str(BIN / "uvicorn"), "fastapi_app:app", "--workers", "2",
            "--host", "127.0.0.1", "--port", str(port), "--timeout-graceful-shutdown", "20",
        ],
        "gunicorn-hooks": [
            str(BIN / "gunicorn"), "-c", "gunicorn_hooks.py", "--workers", "2", "-b", bind,
            "wsgi_app:app",
        ],
        "gunicorn-django": [
            str(BIN / "gunicorn"), "--workers", "2", "-b", bind, "--graceful-timeout", "20",
            "django_site.wsgi",
        ],
        "plain-worker": [sys.executable, "plain_worker.py"],
        "django-command": [sys.executable, "-m", "django", "baton_worker"],
    }  # fmt: skip


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with sqlite_cluster(tmp_path, "embed", "tests.jobs.embedded") as c:
        yield c


def start_server(cluster: Cluster, kind: str, tag: str, embed: str = "1") -> Server:
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(RECIPES), str(ROOT)]),
            "PYTHONUNBUFFERED": "1",
            "BATON_TEST_SINK": str(cluster.sink_path),
            "BATON_BACKEND": cluster.backend_url,
            "BATON_CLUSTER": cluster.name,
            "BATON_JOBS": "tests.jobs.embedded",
            "BATON_LOG_FORMAT": "json",
            "BATON_LEASE_TTL": str(LEASE_TTL),
            "BATON_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE),
            "BATON_REPLICA_ID": tag,  # each worker appends -<pid>
            "BATON_EMBED": embed,  # the Django recipe's AppConfig starts Baton only if "1"
            "DJANGO_SETTINGS_MODULE": "django_site.settings",
        }
    )
    log = cluster.workdir / f"{tag}.log"
    proc = subprocess.Popen(
        commands(port)[kind],
        cwd=RECIPES,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a group of its own, for the cleanup's SIGKILL only
    )
    return Server(tag, proc, log, port)


def writes(cluster: Cluster) -> list[Write]:
    return [w for w in read_writes(cluster.sink_path) if w.resource == "ledger"]


def workers_of(cluster: Cluster, tag: str) -> list[str]:
    return sorted(
        m.replica_id
        for m in cluster.observer.members(cluster.name)
        if m.replica_id.startswith(f"{tag}-")
    )


def ran(cluster: Cluster, prefix: str, job: str) -> list[Write]:
    return [w for w in writes(cluster) if w.job == job and w.replica.startswith(prefix)]


def check_once(cluster: Cluster) -> None:
    """Every tick ran once across every process, and the fenced sink refused nothing."""
    seen = writes(cluster)
    assert all(w.accepted for w in seen), [w for w in seen if not w.accepted]
    twice = [key for key, n in Counter((w.job, w.tick) for w in seen).items() if n > 1]
    assert not twice, f"ticks run more than once: {twice}"


def check_no_gap(cluster: Cluster, prefix: str, job: str) -> None:
    """While the server's workers led, every 1-second instant of ``job`` ran (none missed)."""
    instants = sorted({datetime.fromisoformat(w.tick) for w in ran(cluster, prefix, job)})
    gaps = [(a, b) for a, b in itertools.pairwise(instants) if b - a != timedelta(seconds=1)]
    assert not gaps, f"{job}: ticks missing between {gaps}"


def log_of(server: Server) -> str:
    return server.log.read_text(errors="replace")[-6000:]


@pytest.mark.parametrize("kind", ["uvicorn-fastapi", "gunicorn-hooks", "gunicorn-django"])
def test_server_workers_fire_each_tick_once_and_sigterm_hands_over(
    cluster: Cluster, kind: str
) -> None:
    """2 workers of a real server are 2 replicas; each tick runs once; SIGTERM to the
    server releases the lease to a `baton run` standby; the server exits 0."""
    server = start_server(cluster, kind, "web")
    try:
        wait_for(lambda: len(workers_of(cluster, "web")) >= 2, BOOT_TIMEOUT, "2 worker replicas")
        assert len(workers_of(cluster, "web")) == 2, workers_of(cluster, "web")
        leader = cluster.wait_leader(BOOT_TIMEOUT)
        assert leader.replica_id in workers_of(cluster, "web")
        for job in ("embed.sync", "embed.async"):
            wait_for(
                lambda job=job: len(ran(cluster, "web-", job)) >= TICKS, 30, f"{job} on a worker"
            )
        # Plain jobs on Baton's pool; async ones on uvicorn's own loop, else Baton's.
        loop_thread = "MainThread" if kind.startswith("uvicorn") else "baton-async"
        assert {w.note for w in ran(cluster, "web-", "embed.async")} == {loop_thread}
        assert all(w.note.startswith("baton-job") for w in ran(cluster, "web-", "embed.sync"))
        code, body = server.get("/")
        assert code == 200 and body, log_of(server)
        if kind.startswith("uvicorn"):  # the status page mounted in the app
            code, page = server.get("/baton/")
            assert code == 200 and leader.replica_id in page

        standby = cluster.start_replica("standby")
        wait_for(
            lambda: any(m.replica_id == "standby" for m in cluster.observer.members(cluster.name)),
            BOOT_TIMEOUT,
            "the standby's presence",
        )
        check_no_gap(cluster, "web-", "embed.sync")
        server.proc.send_signal(signal.SIGTERM)
        # The server stops its workers one after the other: the leader's sibling, a replica
        # still running, may take the lease for a moment and release it when its own turn
        # comes. Either way the standby leads by released leases, long before a TTL.
        wait_for(
            lambda: (record := cluster.leader()) is not None and record.replica_id == "standby",
            HANDOVER_TIMEOUT,
            "the standby leading",
        )
        assert server.proc.wait(timeout=30) == 0, log_of(server)
        wait_for(lambda: ran(cluster, "standby", "embed.sync"), 20, "a tick on the standby")
        assert standby.alive
        check_once(cluster)
        # Both workers write JSON lines to one file (they may interleave): look for the
        # event, not for whole lines.
        assert '"event": "replica_stopped"' in server.log.read_text(errors="replace")
    except BaseException:
        print(log_of(server))
        print(cluster.dump_logs())
        raise
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["plain-worker", "django-command"])
def test_plain_workers_fire_each_tick_once_and_sigterm_hands_over(
    cluster: Cluster, kind: str
) -> None:
    """Two plain worker processes (run_until_signal; the Django one a management command):
    each tick once; SIGTERM to the leader hands over to the other at once; the stopped
    worker exits 0."""
    # The command's own path, not the AppConfig's (BATON_EMBED unset).
    servers = [start_server(cluster, kind, f"w{n}", embed="0") for n in (1, 2)]
    try:
        for server in servers:
            wait_for(lambda s=server: workers_of(cluster, s.name), BOOT_TIMEOUT, server.name)
        leader = cluster.wait_leader(BOOT_TIMEOUT)
        first = next(s for s in servers if leader.replica_id.startswith(f"{s.name}-"))
        other = next(s for s in servers if s is not first)
        for job in ("embed.sync", "embed.async"):
            wait_for(lambda job=job: len(ran(cluster, "w", job)) >= TICKS, 30, job)
        assert {w.note for w in ran(cluster, "w", "embed.async")} == {"baton-async"}
        first.proc.send_signal(signal.SIGTERM)
        new = cluster.wait_leader(HANDOVER_TIMEOUT, not_token=leader.token)
        assert new.replica_id.startswith(f"{other.name}-"), new
        assert first.proc.wait(timeout=30) == 0, log_of(first)
        wait_for(lambda: ran(cluster, f"{other.name}-", "embed.sync"), 20, "a tick on the other")
        check_once(cluster)
    except BaseException:
        for server in servers:
            print(log_of(server))
        raise
    finally:
        for server in servers:
            with contextlib.suppress(Exception):
                server.stop()
