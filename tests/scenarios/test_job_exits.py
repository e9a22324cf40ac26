"""A real replica whose thread jobs call sys.exit(), raise KeyboardInterrupt, GeneratorExit or
a custom BaseException every second (tests/jobs/exits.py), on the embedded SQLite backend."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness.process_server import free_port
from tests.harness.replicas import Cluster, wait_for

pytestmark = pytest.mark.slow

#: Each job and the message its runs are recorded with.
EXPECTED = {
    "exit.sys_exit": "SystemExit",
    "exit.sys_exit_code": "SystemExit: 3",
    "exit.keyboard_interrupt": "KeyboardInterrupt",
    "exit.generator_exit": "GeneratorExit",
    "exit.custom": "Custom: secret=hunter2",
}


def get(port: int, path: str) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return response.status, response.read().decode()


def test_jobs_that_end_their_thread_keep_running_and_sigterm_is_prompt(tmp_path: Path) -> None:
    """Every such run is recorded error (type named) and logged; the jobs keep firing;
    /healthz stays ok; /status names the type only; SIGTERM exits well within shutdown_grace."""
    port = free_port()
    cluster = Cluster(f"sqlite:///{tmp_path}/baton.db", "exits", tmp_path / "cluster")
    try:
        replica = cluster.start_replica(
            "r1",
            jobs="tests.jobs.exits",
            lease_ttl=3,
            shutdown_grace=30,
            http_host="127.0.0.1",
            http_port=port,
        )
        cluster.wait_leader(timeout=15)

        def recorded() -> bool:
            for job in [*EXPECTED, "exit.ok"]:
                if len([r for r in cluster.observer_history(job, 10) if not r.unfinished]) < 3:
                    return False
            return True

        wait_for(recorded, 30, "three finished runs of every job")
        for job, message in EXPECTED.items():
            runs = [r for r in cluster.observer_history(job, 10) if not r.unfinished]
            assert {(r.outcome, r.message) for r in runs} == {("error", message)}, job
        assert {r.outcome for r in cluster.observer_history("exit.ok", 10)} <= {"ok", "running"}
        failed = replica.events("job_failed")
        for job, message in EXPECTED.items():
            assert len([e for e in failed if e["job"] == job and e["error"] == message]) >= 3

        assert get(port, "/healthz") == (200, "ok\n")
        doc = json.loads(get(port, "/status")[1])
        shown = {item["name"]: item["last_run"] for item in doc["jobs"]}
        assert shown["exit.custom"]["outcome"] in ("error", "running")
        assert "hunter2" not in json.dumps(doc)
        wait_for(lambda: _custom_run(port), 10, "/status to show a finished custom run")

        began = time.monotonic()
        replica.signal(signal.SIGTERM)
        assert replica.proc.wait(timeout=25) == 0
        took = time.monotonic() - began
        assert took < 10, f"SIGTERM took {took:.1f} s (shutdown_grace is 30 s)"
        assert not replica.events("shutdown_grace_exceeded")
    finally:
        cluster.close()
    assert "Traceback" not in "".join(
        line for line in replica.log_path.read_text().splitlines() if not line.startswith("{")
    )


def _custom_run(port: int) -> bool:
    """/status shows the last finished custom run as its exception type only."""
    doc = json.loads(get(port, "/status")[1])
    run = next(item["last_run"] for item in doc["jobs"] if item["name"] == "exit.custom")
    return bool(run and run["outcome"] == "error" and run["message"] == "Custom")
