"""The sentinel secret, given every way a password can be, is printed by no surface.

The secret (:data:`~tests.badinput.harness.SENTINEL`, with a ``/`` and an ``@``) is the
password of a real ``redis-server`` (``requirepass``) and the digest password of a
ZooKeeper chroot. It is given in the URL's credentials as typed and percent-encoded, with a
user name, as ``?password=``, and as ZooKeeper digest credentials; through ``--backend``,
``BATON_BACKEND`` and the config file. Every surface is searched for it: the text and
``--json`` output of ``baton status/leader/history/jobs``, a running replica's console and
JSON logs, its ``/status``, ``/metrics``, ``/healthz`` and ``/readyz``, the one-line errors
of a wrong password, an unreachable port and a bad option, and in-process the settings'
``repr``/``str``/``model_dump``, the backends' ``url`` and ``repr``, and exceptions
(``str``, ``repr``, their causes and formatted tracebacks).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import traceback
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from scheduler.backends import from_url
from scheduler.errors import BackendError, ConfigError
from scheduler.ops.config import load_settings
from tests.badinput.harness import MAX_LINE, SENTINEL
from tests.harness.cli import baton
from tests.harness.redis_server import HOST, RedisServer, free_port
from tests.harness.replicas import ROOT, wait_for
from tests.harness.zookeeper_server import ZooKeeperServer

pytestmark = pytest.mark.slow

#: The secret percent-encoded, as the README recommends writing it.
ENCODED = quote(SENTINEL, safe="")
#: A wrong password that contains the secret: a leak of either shows as the sentinel.
WRONG = SENTINEL + "-wrong"

JOBS = """
from scheduler import singleton_job

@singleton_job(every="1s", name="secret.tick")
def tick(ctx): ...

@singleton_job(every="1s", name="secret.fails")
def fails(ctx):
    raise RuntimeError("job failed on purpose")
"""

READ_COMMANDS = (
    ("leader",),
    ("status",),
    ("history", "secret.tick"),
    ("jobs", "--jobs", "secretjobs"),
)


@pytest.fixture(scope="module")
def secret_redis() -> Iterator[RedisServer]:
    """A redis-server whose ``requirepass`` is the sentinel."""
    server = RedisServer(password=SENTINEL).start()
    try:
        yield server
    finally:
        server.cleanup()


def redis_urls(port: int) -> dict[str, str]:
    """Every way a Redis URL can carry the secret."""
    return {
        "userinfo-as-typed": f"redis://:{SENTINEL}@{HOST}:{port}/0",
        "userinfo-encoded": f"redis://:{ENCODED}@{HOST}:{port}/0",
        "user-and-password": f"redis://default:{SENTINEL}@{HOST}:{port}/0",
        "query-password": f"redis://{HOST}:{port}/0?password={ENCODED}",
    }


def assert_clean(what: str, text: str) -> None:
    """No sentinel (as typed or percent-encoded) in ``text``."""
    assert SENTINEL not in text, f"{what} printed the secret:\n{text[-3000:]}"
    assert ENCODED not in text, f"{what} printed the encoded secret:\n{text[-3000:]}"


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def failed_here(port: int, replica: str) -> bool:
    """Whether /status shows a failed run of ``secret.fails`` by ``replica``."""
    code, body = get(port, "/status")
    if code != 200:
        return False
    for job in json.loads(body)["jobs"]:
        last = job.get("last_run") or {}
        if last.get("outcome") == "error" and last.get("replica_id") == replica:
            return True
    return False


def project(tmp_path: Path, url: str) -> Path:
    """A project directory: the jobs module and a config file naming ``url``."""
    (tmp_path / "secretjobs.py").write_text(textwrap.dedent(JOBS))
    (tmp_path / "baton.yaml").write_text(
        f"backend: '{url}'\ncluster: secrets\njobs: [secretjobs]\nlease_ttl: 3\n"
    )
    return tmp_path


def run_replica(
    cwd: Path, log_format: str, http_port: int, env: dict[str, str]
) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    full.update(
        PYTHONPATH=os.pathsep.join([str(cwd), str(ROOT)]),
        PYTHONUNBUFFERED="1",
        BATON_CONFIG=str(cwd / "baton.yaml"),
        BATON_REPLICA_ID=f"secret-{log_format}",
        BATON_HTTP_HOST=HOST,
        BATON_HTTP_PORT=str(http_port),
    )
    full.update(env)
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run", "--log-format", log_format],
        cwd=cwd,
        env=full,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )


def stop(proc: subprocess.Popen[str]) -> str:
    """SIGTERM ``proc``; everything it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def exercise(cwd: Path, read_env: dict[str, str], read_args: tuple[str, ...]) -> None:
    """Run replicas with both log formats, read every surface of them; assert no secret."""
    watch(cwd, "console", read_env, read_args)
    watch(cwd, "json", read_env, ())


def watch(cwd: Path, log_format: str, read_env: dict[str, str], read_args: tuple[str, ...]) -> None:
    """One replica: its endpoints, the read commands (with ``read_args``), its logs."""
    port = free_port()
    proc = run_replica(cwd, log_format, port, {})
    try:
        wait_for(lambda: failed_here(port, f"secret-{log_format}"), 30, "a failed run")
        for path in ("/status", "/metrics", "/healthz", "/readyz", "/nope"):
            code, body = get(port, path)
            assert code, f"{path} did not answer"
            assert_clean(f"{path} ({log_format})", body)
        assert "***" in json.loads(get(port, "/status")[1])["backend"]
        for command in READ_COMMANDS if read_args or read_env else ():
            for extra in ((), ("--json",)):
                done = baton(*command, *read_args, *extra, cwd=cwd, env=read_env)
                shown = f"baton {' '.join(command + extra)}"
                assert done.returncode == 0, f"{shown}: {done.stderr}"
                assert "Traceback" not in done.stdout + done.stderr
                assert_clean(shown, done.stdout + done.stderr)
    finally:
        out = stop(proc)
    # The failing job's traceback is logged (that is its point), but holds no secret either.
    assert "job_failed" in out, out[-3000:]
    assert_clean(f"baton run --log-format {log_format}", out)
    if log_format == "json":
        lines = [line for line in out.splitlines() if line.strip()]
        assert lines and all(line.startswith("{") for line in lines), out[-3000:]


@pytest.mark.parametrize("form", list(redis_urls(0)))
def test_redis_secret_in_no_output(form: str, secret_redis: RedisServer, tmp_path: Path) -> None:
    """Redis password in the URL (typed, encoded, with a user, as ?password=): nowhere shown."""
    url = redis_urls(secret_redis.port)[form]
    cwd = project(tmp_path, url)
    # Read commands get the URL through a flag for two forms, the environment for the others.
    if form in ("userinfo-as-typed", "query-password"):
        exercise(cwd, {}, ("--backend", url, "--cluster", "secrets"))
    else:
        exercise(cwd, {"BATON_BACKEND": url, "BATON_CLUSTER": "secrets"}, ())


def test_zookeeper_digest_secret_in_no_output(
    zookeeper_server: ZooKeeperServer, tmp_path: Path
) -> None:
    """ZooKeeper digest credentials with the secret as password: nowhere shown."""
    chroot = f"/secrets-{uuid.uuid4().hex[:8]}"
    url = zookeeper_server.url(chroot, user="baton", password=SENTINEL)
    cwd = project(tmp_path, url)
    exercise(cwd, {}, ("--config", str(cwd / "baton.yaml")))
    # A wrong digest password on the now protected chroot: one line, exit 2, no secret.
    wrong = zookeeper_server.url(chroot, user="baton", password=WRONG)
    done = baton("leader", "--backend", wrong, "--cluster", "secrets", cwd=cwd)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert_clean("a wrong ZooKeeper digest", done.stdout + done.stderr)


def error_urls(port: int) -> dict[str, tuple[str, int]]:
    """Failing URLs that carry the secret, with the exit code each must give."""
    dead = free_port()
    return {
        "wrong-password": (f"redis://:{WRONG}@{HOST}:{port}/0", 2),
        "wrong-password-query": (f"redis://{HOST}:{port}/0?password={quote(WRONG)}", 2),
        "unreachable": (f"redis://:{SENTINEL}@{HOST}:{dead}/0", 1),
        "unknown-option": (f"redis://:{SENTINEL}@{HOST}:{port}/0?frob=1", 2),
        "bad-db": (f"redis://:{SENTINEL}@{HOST}:{port}/abc", 2),
        "bad-port": (f"redis://:{SENTINEL}@{HOST}:99999/0", 2),
        "raw-at-in-query": (f"redis://{HOST}:{port}/0?password={SENTINEL}", 2),
        "password-twice": (f"redis://:{SENTINEL}@{HOST}:{port}/0?password={ENCODED}", 2),
        "unknown-scheme": (f"rediz://:{SENTINEL}@{HOST}:{port}/0", 2),
        "no-scheme": (f":{SENTINEL}@{HOST}:{port}/0", 2),
        "zookeeper-option": (f"zookeeper://baton:{SENTINEL}@{HOST}:{dead}/b?x=1", 2),
        "zookeeper-empty-host": (f"zookeeper://baton:{SENTINEL}@/b", 2),
        "sqlite-credentials": (f"sqlite://u:{SENTINEL}@/x.db", 2),
    }


@pytest.mark.parametrize("case", list(error_urls(0)))
def test_errors_never_echo_the_secret(case: str, secret_redis: RedisServer, tmp_path: Path) -> None:
    """Wrong password, unreachable port, bad option: one line, exit code, no secret."""
    url, code = error_urls(secret_redis.port)[case]
    for args in (("leader", "--backend", url), ("status", "--json", "--backend", url)):
        done = baton(*args, cwd=tmp_path, env={}, timeout=60)
        output = done.stdout + done.stderr
        assert "Traceback" not in output, output
        assert_clean(f"baton {args[0]} ({case})", output)
        assert done.returncode == code, output
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and len(lines[0]) <= MAX_LINE, output
    if code == 2:  # refused before the election: `baton run` exits too, through the env
        (tmp_path / "secretjobs.py").write_text(textwrap.dedent(JOBS))
        args = ("run", "--jobs", "secretjobs", "--log-format", "json")
        done = baton(*args, cwd=tmp_path, env={"BATON_BACKEND": url}, timeout=30)
        assert done.returncode == 2, done.stderr
        assert_clean(f"baton run ({case})", done.stdout + done.stderr)


def test_run_against_unreachable_backend_logs_no_secret(tmp_path: Path) -> None:
    """A replica retrying an unreachable backend logs it (JSON and console) without the secret."""
    (tmp_path / "secretjobs.py").write_text(textwrap.dedent(JOBS))
    url = f"redis://:{SENTINEL}@{HOST}:{free_port()}/0"
    for log_format in ("json", "console"):
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        env.update(PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]), BATON_BACKEND=url)
        args = ("run", "--jobs", "secretjobs", "--log-format", log_format)
        log = tmp_path / f"run-{log_format}.log"
        with log.open("w") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "scheduler", *args],
                cwd=tmp_path,
                env=env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )

        def retried(log: Path = log, proc: subprocess.Popen[str] = proc) -> bool:
            """Three retries logged: the retry path (with its backoff), not only the first
            failure (or the replica ended, which the asserts below report)."""
            return proc.poll() is not None or log.read_text(errors="replace").count("retry_in") >= 3

        wait_for(retried, 30, "three logged retries")
        stop(proc)
        out = log.read_text(errors="replace")
        assert "backend_unavailable" in out or "unreachable" in out, out[-3000:]
        assert "Traceback" not in out, out[-3000:]
        assert_clean(f"baton run ({log_format}, unreachable)", out)


def test_in_process_surfaces_hide_the_secret(secret_redis: RedisServer) -> None:
    """Settings repr/str/model_dump, backend url/repr and exceptions never hold the secret."""
    for name, url in redis_urls(secret_redis.port).items():
        settings = load_settings(None, {"backend": url}, environ={})
        for text in (
            repr(settings),
            str(settings),
            str(settings.model_dump()),
            settings.model_dump_json(),
            f"{settings.backend}",
            repr(settings.backend),
        ):
            assert_clean(f"settings ({name})", text)
        assert settings.backend == url  # the URL itself is still there, for opening it
        backend = settings.open_backend(1.0)
        try:
            backend.check()  # the right password works
            assert_clean(f"backend ({name})", f"{backend.url} {backend!r}")
        finally:
            backend.close()
    failing = [
        f"redis://:{WRONG}@{HOST}:{secret_redis.port}/0",
        f"redis://:{SENTINEL}@{HOST}:{free_port()}/0",
    ]
    for url in failing:
        backend = from_url(url, op_timeout=1.0)
        with pytest.raises(BackendError) as caught:
            backend.check()
        backend.close()
        exc = caught.value
        text = "".join(traceback.format_exception(exc))
        assert_clean("a backend error", f"{exc} {exc!r} {exc.backend} {exc.__cause__!r} {text}")
    with pytest.raises(ConfigError) as bad:
        from_url(f"redis://:{SENTINEL}@{HOST}:1/0?frob=1", op_timeout=1.0)
    text = "".join(traceback.format_exception(bad.value))
    assert_clean("a config error", f"{bad.value} {bad.value!r} {text}")
