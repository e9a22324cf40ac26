"""The baton command: every subcommand, its --json shape, and each bad-input case."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.backends import from_url
from scheduler.backends.runs import Retention, RunRecord
from scheduler.leadership.lease import Holder
from tests.harness.cli import baton
from tests.harness.redis_server import RedisServer, free_port
from tests.harness.replicas import ROOT, wait_for

JOBS_MODULE = """
from scheduler import singleton_job

@singleton_job(every="5s", name="cli.tick")
def tick(ctx): ...

@singleton_job(cron="0 3 * * *", timezone="Europe/Berlin", name="cli.nightly")
def nightly(ctx): ...
"""


def assert_user_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """One line on stderr naming the problem, the expected exit code, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("baton: error:"), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project dir with a jobs module and a populated embedded backend."""
    (tmp_path / "myjobs.py").write_text(textwrap.dedent(JOBS_MODULE))
    backend = from_url(f"sqlite:///{tmp_path}/baton.db")
    lease = backend.try_acquire("prod", Holder.new("replica-7", host="node-a"), 30)
    assert lease is not None
    start = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    for i in range(3):
        run = RunRecord(
            "cli.tick", start + timedelta(seconds=5 * i), "replica-7", lease.token, start
        )
        assert backend.claim(lease, run, Retention()) is not None
        outcome = "error" if i == 2 else "ok"
        backend.finish(
            "prod", run.finished(outcome, start + timedelta(seconds=1), "boom" * (i == 2))
        )
    backend.close()
    return tmp_path


BACKEND = ["--backend", "sqlite:///baton.db", "--cluster", "prod"]


def test_leader_text_and_json(project: Path) -> None:
    """`baton leader` shows replica, host, since, token and lease time left."""
    text = baton("leader", *BACKEND, cwd=project)
    assert text.returncode == 0, text.stderr
    assert "replica-7" in text.stdout and "node-a" in text.stdout and "s left" in text.stdout
    data = json.loads(baton("leader", *BACKEND, "--json", cwd=project).stdout)
    leader = data["leader"]
    assert set(leader) == {"replica_id", "host", "since", "token", "ttl_left"}
    assert leader["replica_id"] == "replica-7" and leader["host"] == "node-a"
    assert 0 < leader["ttl_left"] <= 30 and isinstance(leader["token"], int)
    datetime.fromisoformat(leader["since"])
    none = json.loads(
        baton("leader", "--backend", "sqlite:///baton.db", "--json", cwd=project).stdout
    )
    assert none["leader"] is None and none["cluster"] == "default"


def test_jobs_lists_schedule_next_fire_and_last_run(project: Path) -> None:
    """`baton jobs` lists each job with schedule, next fire and last run."""
    data = json.loads(baton("jobs", *BACKEND, "--jobs", "myjobs", "--json", cwd=project).stdout)
    by_name = {item["name"]: item for item in data}
    assert set(by_name) == {"cli.tick", "cli.nightly"}
    tick = by_name["cli.tick"]
    assert tick["schedule"] == "every 5s" and tick["catch_up"] == "latest"
    assert tick["last_run"]["outcome"] == "error" and tick["last_run"]["replica_id"] == "replica-7"
    assert datetime.fromisoformat(tick["next_fire"]) > datetime.now(UTC) - timedelta(seconds=1)
    assert by_name["cli.nightly"]["last_run"] is None
    text = baton("jobs", *BACKEND, "--jobs", "myjobs", cwd=project)
    assert text.returncode == 0 and "cron '0 3 * * *' (Europe/Berlin)" in text.stdout


def test_history_newest_first_with_limit(project: Path) -> None:
    """`baton history JOB` shows claim records newest first, limited."""
    data = json.loads(
        baton("history", "cli.tick", *BACKEND, "--limit", "2", "--json", cwd=project).stdout
    )
    assert [r["scheduled_time"][11:19] for r in data] == ["12:00:10", "12:00:05"]
    assert set(data[0]) == {
        "attempt",
        "job",
        "scheduled_time",
        "replica_id",
        "token",
        "started",
        "ended",
        "outcome",
        "message",
    }
    assert data[0]["outcome"] == "error" and data[0]["message"] == "boom"
    text = baton("history", "cli.tick", *BACKEND, cwd=project)
    assert text.returncode == 0 and text.stdout.count("replica-7") == 3
    empty = baton("history", "nope", *BACKEND, cwd=project)
    assert empty.returncode == 0 and "no runs recorded" in empty.stdout


def test_python_dash_m_and_help(tmp_path: Path) -> None:
    """`python -m scheduler --help` lists the commands."""
    result = baton("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("run", "leader", "jobs", "history"):
        assert command in result.stdout


def test_help_shows_the_exit_code_table(tmp_path: Path) -> None:
    """`baton --help` ends with the exit codes: 0 ok, 1 not done or unreachable, 2 usage."""
    out = baton("--help", cwd=tmp_path).stdout
    table = out[out.index("Exit codes:") :]
    codes = [line.split()[0] for line in table.splitlines()[1:] if line[:6].strip().isdigit()]
    assert codes == ["0", "1", "2", "3", "130"]
    assert "not take effect" in table and "usage or configuration" in table


@pytest.mark.parametrize(
    ("setup", "args", "fragments"),
    [
        (
            {"baton.yaml": "lease_tll: 3\n"},
            ["leader", "--config", "baton.yaml"],
            ["'lease_tll'", "did you mean 'lease_ttl'"],
        ),
        (
            {},
            ["leader", "--backend", "mysql://db/1"],
            ["'backend'", "unsupported URL scheme 'mysql'"],
        ),
        (
            {"baton.yaml": "history_limit: lots\n"},
            ["leader", "--config", "baton.yaml"],
            ["'history_limit'", "whole number from 1 to 10000"],
        ),
        (
            {},
            ["run", "--jobs", "no_such_module", "--backend", "sqlite:///b.db"],
            ["'no_such_module'", "not found"],
        ),
        (
            {
                "bad_cron.py": "from scheduler import singleton_job\n"
                "@singleton_job(cron='0 0 31 2 *', name='billing.never')\ndef f(ctx): ...\n"
            },
            ["run", "--jobs", "bad_cron", "--backend", "sqlite:///b.db"],
            ["'billing.never'", "can never fire"],
        ),
        (
            {
                "bad_expr.py": "from scheduler import singleton_job\n"
                "@singleton_job(cron='*/5 * * *', name='billing.short')\ndef f(ctx): ...\n"
            },
            ["run", "--jobs", "bad_expr", "--backend", "sqlite:///b.db"],
            ["'billing.short'", "5 fields"],
        ),
        (
            {
                "dup.py": "from scheduler import singleton_job\n"
                "@singleton_job(every='1s', name='same')\ndef a(ctx): ...\n"
                "@singleton_job(every='1s', name='same')\ndef b(ctx): ...\n"
            },
            ["run", "--jobs", "dup", "--backend", "sqlite:///b.db"],
            ["'same'", "duplicate job name"],
        ),
        (
            {},
            ["run", "--backend", "sqlite:///b.db", "--lease-ttl"],
            ["no such option '--lease-ttl'", "(see 'baton run --help')"],
        ),
    ],
)
def test_bad_input_is_one_line_exit_2(
    tmp_path: Path, setup: dict[str, str], args: list[str], fragments: list[str]
) -> None:
    """Bad config, URL scheme, jobs module, cron or option: exit 2, one line, no traceback."""
    for name, content in setup.items():
        (tmp_path / name).write_text(content)
    result = baton(*args, cwd=tmp_path)
    assert_user_error(result, 2, *fragments)
    assert not (tmp_path / "b.db").exists(), "the replica touched the backend before failing"


def test_env_var_of_wrong_type_names_the_variable(tmp_path: Path) -> None:
    """BATON_LEASE_TTL=abc: exit 2 naming the key and the variable."""
    result = baton("leader", cwd=tmp_path, env={"BATON_LEASE_TTL": "abc"})
    assert_user_error(result, 2, "'lease_ttl'", "BATON_LEASE_TTL")


def test_unreachable_backend_exits_1_within_seconds(tmp_path: Path) -> None:
    """`baton leader` against a closed port fails with exit 1 and a clear message, quickly."""
    started = time.monotonic()
    result = baton("leader", "--backend", f"redis://127.0.0.1:{free_port()}/0", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert_user_error(result, 1, "backend redis://127.0.0.1:")
    assert elapsed < 10, f"took {elapsed:.1f} s"


@pytest.fixture(scope="module")
def secured_redis() -> Iterator[RedisServer]:
    server = RedisServer(password="s3cret").start()
    try:
        yield server
    finally:
        server.cleanup()


def test_wrong_redis_password_names_the_backend(secured_redis: RedisServer, tmp_path: Path) -> None:
    """A wrong password is a clear error naming the backend, without echoing the password."""
    url = f"redis://:wrong-pass@127.0.0.1:{secured_redis.port}/0"
    for args in (["leader"], ["run", "--jobs", "tests.jobs.replica"]):
        result = baton(*args, "--backend", url, cwd=tmp_path)
        assert_user_error(result, 2, f"redis://:***@127.0.0.1:{secured_redis.port}/0", "auth")
        assert "wrong-pass" not in result.stderr


def test_run_keeps_retrying_an_unreachable_backend_and_never_leads(tmp_path: Path) -> None:
    """`baton run` with no backend logs retries with backoff, never leads, stops on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env.update(PYTHONPATH=str(ROOT), BATON_TEST_SINK=str(tmp_path / "sink.db"))
    log = tmp_path / "replica.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler",
            "run",
            "--jobs",
            "tests.jobs.replica",
            "--backend",
            f"redis://127.0.0.1:{free_port()}/0",
            "--log-format",
            "json",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:

        def retries() -> list[dict[str, object]]:
            events = [
                json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")
            ]
            return [e for e in events if e["event"] == "backend_unavailable" and "retry_in" in e]

        seen = wait_for(lambda: len(retries()) >= 3 and retries(), 20, "three retries", 0.05)
        delays = [float(e["retry_in"]) for e in seen]  # type: ignore[arg-type]
        assert delays == sorted(delays) and delays[1] > delays[0], delays
        assert "leadership_acquired" not in log.read_text()
        assert all(e["replica"] for e in seen)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
