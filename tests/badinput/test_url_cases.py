"""Bad-input catalogue: backend URLs and credentials, for every scheme and every command.

Each case asserts the edge contract of :func:`tests.badinput.harness.check` (exit code, one
line, no traceback, no sentinel secret). URL problems are configuration errors (exit 2,
naming the redacted URL and the scheme's allowed options); an unreachable backend is exit 1;
refused credentials exit 2 (they will not start working on a retry). Read commands never
create an embedded database: a missing file or directory is exit 2, and nothing appears.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.badinput.harness import Case, check, run_case, url_case
from tests.harness.replicas import ROOT, wait_for

#: The sentinel, percent-encoded as the README asks (the harness checks its decoded form).
ENCODED = "Hunter2-s3cr3t%2Fw%40rd"
#: One valid jobs module, for ``baton jobs`` and ``baton run``.
JOBS = """
from scheduler import singleton_job

@singleton_job(every="1s", name="cases.tick")
def tick(ctx): ...
"""
REDIS_SAYS = "options: db, username, password, client_name"
LONG = "a" * 5000


CASES = [
    # -- schemes ----------------------------------------------------------------------------
    url_case("scheme-unknown", "mysql://db/1", "unsupported URL scheme 'mysql'"),
    url_case("scheme-missing", "just-a-file.db", "no URL scheme"),
    url_case("scheme-missing-secret", ":{secret}@127.0.0.1:6379/0", "no URL scheme"),
    url_case("scheme-typo-secret", "rediz://:{secret}@127.0.0.1/0", "unsupported URL scheme"),
    url_case("scheme-one-slash-secret", "redis:/:{secret}@127.0.0.1/0", "no URL scheme"),
    url_case("url-too-long", "redis://" + LONG, "characters long"),
    url_case("url-non-ascii", "redis://h\u00e9st:6379/0", "non-ASCII"),
    url_case("url-space-in-host", "redis://my host:6379/0", "space"),
    url_case("url-fragment-secret", "redis://:{secret}@127.0.0.1:6379/0#x", "#fragment"),
    # -- Redis options --------------------------------------------------------------------
    url_case("redis-unknown-option", "redis://127.0.0.1:{dead_port}/0?frob=1", REDIS_SAYS),
    url_case("redis-unknown-option-secret", "redis://:{secret}@127.0.0.1/0?frob=1", "frob"),
    url_case("redis-option-twice", "redis://127.0.0.1/0?client_name=a&client_name=b", "twice"),
    url_case("redis-option-no-value", "redis://127.0.0.1/0?client_name", "no value"),
    url_case("redis-socket-timeout", "redis://127.0.0.1/0?socket_timeout=60", "op_timeout"),
    url_case("redis-retry-on-timeout", "redis://127.0.0.1/0?retry_on_timeout=1", "op_timeout"),
    url_case("redis-ssl-option-on-plain", "redis://127.0.0.1/0?ssl_ca_certs=/x", "unknown"),
    url_case("redis-client-name-space", "redis://127.0.0.1/0?client_name=a%20b", "client_name"),
    url_case("redis-password-query-raw-at", "redis://127.0.0.1/0?password={secret}", "%40"),
    url_case("redis-password-twice", "redis://:{secret}@127.0.0.1/0?password=" + ENCODED, "twice"),
    url_case("redis-user-twice", "redis://me:{secret}@127.0.0.1/0?username=you", "twice"),
    url_case("redis-user-without-password", "redis://{secret}@127.0.0.1/0", "needs a password"),
    url_case("redis-empty-password", "redis://me:@127.0.0.1/0", "password is empty"),
    url_case("redis-query-user-only", "redis://127.0.0.1/0?username=me", "needs a password"),
    # -- Redis database numbers -------------------------------------------------------------
    url_case("redis-db-abc", "redis://:{secret}@127.0.0.1:6379/abc", "database"),
    url_case("redis-db-negative", "redis://127.0.0.1:6379/-1", "from 0 to 9999"),
    url_case("redis-db-huge", "redis://127.0.0.1:6379/99999", "from 0 to 9999"),
    url_case("redis-db-query-abc", "redis://127.0.0.1:6379?db=abc", "database"),
    url_case("redis-db-twice", "redis://127.0.0.1:6379/1?db=2", "twice"),
    url_case("redis-db-path-extra", "redis://127.0.0.1:6379/0/1", "database"),
    url_case("redis-db-float", "redis://127.0.0.1:6379/1.5", "database"),
    # -- hosts and ports --------------------------------------------------------------------
    url_case("port-zero", "redis://127.0.0.1:0/0", "port"),
    url_case("port-70000", "redis://:{secret}@127.0.0.1:70000/0", "port"),
    url_case("port-abc", "redis://127.0.0.1:abc/0", "port"),
    url_case("port-empty", "redis://127.0.0.1:/0", "port"),
    url_case("port-negative", "redis://127.0.0.1:-1/0", "port"),
    url_case("host-empty", "redis:///0", "host is empty"),
    url_case("host-empty-secret", "redis://:{secret}@/0", "host is empty"),
    url_case("host-only-port", "redis://:6379/0", "host is empty"),
    url_case("host-empty-label", "redis://a..b:6379/0", "malformed"),
    url_case("ipv6-without-brackets", "redis://::1:6379/0", "brackets"),
    url_case("ipv6-unclosed", "redis://[::1:6379/0", "closing"),
    url_case("ipv6-not-an-address", "redis://[zz::1]:6379/0", "not an IPv6"),
    url_case("ipv6-junk-after", "redis://[::1]x:6379/0", "after the IPv6"),
    url_case(
        "ipv6-unreachable-secret",
        "redis://:{secret}@[::1]:{dead_port}/0",
        "unreachable",
        exit=1,
    ),
    # -- rediss (TLS) -----------------------------------------------------------------------
    url_case("rediss-cert-none", "rediss://:{secret}@localhost/0?ssl_cert_reqs=none", "required"),
    url_case("rediss-hostname-off", "rediss://localhost/0?ssl_check_hostname=false", "stay on"),
    url_case("rediss-ca-missing", "rediss://localhost/0?ssl_ca_certs={tmp}/nope.pem", "no file"),
    Case(
        "rediss-cert-without-key",
        ("leader", "--backend", "rediss://localhost/0?ssl_certfile={tmp}/baton.yaml"),
        exit=2,
        config="cluster: c\n",
        says="together",
    ),
    url_case("rediss-unknown-option", "rediss://localhost/0?ssl_ciphers=NULL", "ssl_ca_certs"),
    # -- credentials against a real server (it has no password, so a user it lacks is refused)
    url_case(
        "redis-user-refused", "redis://nobody:{secret}@127.0.0.1:{redis_port}/0", "authentication"
    ),
    url_case(
        "redis-encoded-password-refused",
        f"redis://127.0.0.1:{{redis_port}}/0?username=nobody&password={ENCODED}",
        "authentication",
    ),
    url_case(
        "redis-unreachable-secret", "redis://:{secret}@127.0.0.1:{dead_port}/0", "unreachable", 1
    ),
    url_case(
        "redis-unreachable-query-secret",
        f"redis://127.0.0.1:{{dead_port}}/0?password={ENCODED}",
        "unreachable",
        1,
    ),
    url_case(
        "status-json-unreachable-secret",
        "redis://:{secret}@127.0.0.1:{dead_port}/0",
        "unreachable",
        1,
        command="status",
    ),
    Case(
        "history-bad-option-secret",
        ("history", "x", "--backend", "redis://:{secret}@127.0.0.1/0?x=1"),
        exit=2,
        says="unknown option",
    ),
    Case(
        "jobs-bad-db-secret",
        ("jobs", "--jobs", "badjobs", "--backend", "redis://:{secret}@127.0.0.1/x"),
        exit=2,
        jobs=JOBS,
        says="database",
    ),
    Case(
        "run-bad-option-secret",
        ("run", "--jobs", "badjobs", "--backend", "redis://:{secret}@127.0.0.1/0?x=1"),
        exit=2,
        jobs=JOBS,
        says="unknown option",
    ),
    Case(
        "run-password-refused",
        (
            "run",
            "--jobs",
            "badjobs",
            "--backend",
            "redis://nobody:{secret}@127.0.0.1:{redis_port}/0",
        ),
        exit=2,
        jobs=JOBS,
        says="authentication",
    ),
    # -- where the URL came from ---------------------------------------------------------------
    Case(
        "config-file-bad-option-secret",
        ("status", "--config", "{tmp}/baton.yaml"),
        exit=2,
        config="backend: 'redis://:{secret}@127.0.0.1/0?frob=1'\n",
        says="baton.yaml",
    ),
    Case(
        "env-bad-db-secret",
        ("status",),
        exit=2,
        env={"BATON_BACKEND": "redis://:{secret}@127.0.0.1/-1"},
        says="BATON_BACKEND",
    ),
    Case(
        "env-newline-in-url",
        ("leader",),
        exit=2,
        env={"BATON_BACKEND": "redis://127.0.0.1/0\nforged line"},
        says="control",
    ),
    Case(
        "config-backend-not-text",
        ("leader", "--config", "{tmp}/baton.yaml"),
        exit=2,
        config="backend: 5\n",
        says="backend",
    ),
    Case(
        "config-backend-list-secret",
        ("leader", "--config", "{tmp}/baton.yaml"),
        exit=2,
        config="backend: ['redis://:{secret}@127.0.0.1/0']\n",
        says="backend",
    ),
    # -- SQLite -----------------------------------------------------------------------------
    url_case("sqlite-host", "sqlite://host/x.db", "three slashes"),
    url_case("sqlite-credentials-secret", "sqlite://u:{secret}@/x.db", "three slashes"),
    url_case("sqlite-query", "sqlite:///{tmp}/b.db?mode=ro", "query"),
    url_case("sqlite-memory", "sqlite:///:memory:", "in-memory"),
    url_case("sqlite-no-file", "sqlite:///", "no database file"),
    url_case("sqlite-trailing-slash", "sqlite:///{tmp}/dir/", "no database file"),
    url_case("sqlite-missing-dir-leader", "sqlite:///{tmp}/nodir/sub/b.db", "no database at"),
    url_case(
        "sqlite-missing-file-status", "sqlite:///{tmp}/missing.db", "no database at", 2, "status"
    ),
    url_case("sqlite-relative-missing", "sqlite:///missing.db", "no database at", 2, "status"),
    url_case("sqlite-directory", "sqlite:///{tmp}", "directory", 2, "status"),
    Case(
        "sqlite-missing-history",
        ("history", "cases.tick", "--backend", "sqlite:///{tmp}/nodir/b.db"),
        exit=2,
        says="no database at",
    ),
    Case(
        "sqlite-missing-jobs",
        ("jobs", "--jobs", "badjobs", "--backend", "sqlite:///{tmp}/nodir/b.db"),
        exit=2,
        jobs=JOBS,
        says="no database at",
    ),
    Case(
        "sqlite-empty-file",
        ("leader", "--backend", "sqlite:///{tmp}/baton.yaml"),
        exit=2,
        config="",
        says="no Baton database",
    ),
    # -- ZooKeeper --------------------------------------------------------------------------
    url_case("zookeeper-option", "zookeeper://127.0.0.1:{dead_port}/b?x=1", "zookeeper: config"),
    url_case("zookeeper-empty-host-secret", "zookeeper://u:{secret}@,127.0.0.1/b", "empty"),
    url_case("zookeeper-user-only", "zookeeper://baton@127.0.0.1/b", "user:password"),
    url_case("zookeeper-empty-password", "zookeeper://baton:@127.0.0.1/b", "user:password"),
    url_case("zookeeper-empty-user-secret", "zookeeper://:{secret}@127.0.0.1/b", "user:password"),
    url_case("zookeeper-bad-port", "zookeeper://127.0.0.1:99999/b", "port"),
    url_case("zookeeper-bad-chroot", "zookeeper://127.0.0.1/a/../b", "node name"),
    url_case("zookeeper-ipv6-unbracketed", "zookeeper://::1:2181/b", "brackets"),
    url_case("zookeeper-fragment-secret", "zookeeper://u:{secret}@127.0.0.1/b#x", "#fragment"),
    Case(
        "zookeeper-unreachable-secret",
        ("leader", "--backend", "zookeeper://baton:{secret}@127.0.0.1:{dead_port}/b"),
        exit=1,
        timeout=60,
    ),
    # -- Redis Sentinel and Cluster -----------------------------------------------------------
    url_case("sentinel-no-service", "redis+sentinel://127.0.0.1:26379", "service name"),
    url_case("sentinel-bad-service", "redis+sentinel://h:1/a%20b/0", "service name"),
    url_case("sentinel-db-twice", "redis+sentinel://h:1/svc/1?db=2", "twice"),
    url_case(
        "sentinel-empty-pw-secret", "redis+sentinel://:{secret}@h/s?sentinel_password=", "empty"
    ),
    url_case(
        "sentinel-ack-word", "redis+sentinel://h/svc?min_replicas_ack=all", "min_replicas_ack"
    ),
    url_case("redis-ack-huge", "redis://127.0.0.1/0?min_replicas_ack=101", "at most 100"),
    url_case("redis-two-hosts", "redis://a:1,b:2/0", "one host only"),
    url_case("cluster-path", "redis+cluster://a:1,b:2/0", "no path"),
    url_case("cluster-db-option", "redis+cluster://a:1?db=1", "unknown option"),
    url_case(
        "cluster-tls-off-secret", "rediss+cluster://:{secret}@a:1?ssl_cert_reqs=none", "required"
    ),
    url_case(
        "sentinel-unreachable-secret",
        "redis+sentinel://:{secret}@127.0.0.1:{dead_port}/svc/0",
        "redis+sentinel://:***@",
        1,
    ),
    url_case(
        "cluster-unreachable-secret",
        "redis+cluster://:{secret}@127.0.0.1:{dead_port}",
        "redis+cluster://:***@",
        1,
    ),
    # -- PostgreSQL ---------------------------------------------------------------------------
    url_case("pg-no-database-secret", "postgresql://u:{secret}@127.0.0.1", "database is missing"),
    url_case("pg-unknown-option", "postgresql://127.0.0.1/db?frob=1", "options: user"),
    url_case("pg-connect-timeout", "postgresql://127.0.0.1/db?connect_timeout=60", "op_timeout"),
    url_case("pg-options-option", "postgresql://127.0.0.1/db?options=-c%20x%3D1", "op_timeout"),
    url_case("pg-sslmode-require", "postgresql://127.0.0.1/db?sslmode=require", "verify-full"),
    url_case("pg-sslmode-prefer-secret", "postgres://u:{secret}@h/db?sslmode=prefer", "verify"),
    url_case("pg-tls-file-no-tls", "postgresql://h/db?sslrootcert=/etc/hosts", "verify-full"),
    url_case(
        "pg-tls-file-missing", "postgresql://h/db?sslmode=verify-full&sslrootcert=/nx", "no file"
    ),
    url_case(
        "pg-cert-without-key",
        "postgresql://h/db?sslmode=verify-full&sslcert=/etc/hosts",
        "together",
    ),
    url_case("pg-schema-upper", "postgresql://127.0.0.1/db?schema=Cron", "schema must be"),
    url_case("pg-schema-pg", "postgresql://127.0.0.1/db?schema=pg_cron", "schema must be"),
    url_case(
        "pg-schema-injection", "postgresql://h/db?schema=x%3Bdrop%20table%20y", "schema must be"
    ),
    url_case("pg-create-schema-maybe", "postgresql://h/db?create_schema=maybe", "true or false"),
    url_case("pg-password-twice-secret", "postgresql://u:{secret}@h/db?password=x", "twice"),
    url_case("pg-password-no-user-secret", "postgresql://:{secret}@h/db", "needs a user"),
    url_case("pg-empty-password", "postgresql://u:@h/db", "empty"),
    url_case("pg-standby-only", "postgresql://h/db?target_session_attrs=standby", "read-write"),
    url_case("pg-bad-port", "postgresql://127.0.0.1:0/db", "port"),
    url_case("pg-ipv6-unbracketed", "postgresql://::1:5432/db", "brackets"),
    url_case(
        "pg-unreachable-secret",
        "postgresql://baton:{secret}@127.0.0.1:{dead_port}/b",
        "postgresql://baton:***@",
        1,
    ),
    Case(
        "pg-schema-command-not-pg",
        ("schema", "--backend", "redis://127.0.0.1:{dead_port}/0", "--print-sql"),
        exit=2,
        says="postgresql://",
    ),
    # -- etcd:// and etcds:// -----------------------------------------------------------------
    url_case("etcd-unknown-option-secret", "etcd://u:{secret}@h:2379?frob=1", "options: user"),
    url_case("etcd-timeout-option", "etcd://h:2379?timeout=60", "op_timeout"),
    url_case("etcd-bad-prefix", "etcd://h:2379/a//b", "key prefix"),
    url_case("etcd-prefix-space", "etcd://h:2379/a%20b", "key prefix"),
    url_case("etcd-user-no-password", "etcd://baton@h:2379", "needs a password"),
    url_case("etcd-password-no-user-secret", "etcd://:{secret}@h:2379", "needs a user"),
    url_case("etcd-password-twice-secret", "etcd://u:{secret}@h?password=x", "twice"),
    url_case("etcd-tls-file-no-tls", "etcd://h:2379?cacert=/etc/hosts", "etcds://"),
    url_case("etcds-cacert-missing-secret", "etcds://u:{secret}@h?cacert=/nx", "no file"),
    url_case("etcds-cert-without-key", "etcds://h?cert=/etc/hosts", "go together"),
    url_case("etcd-endpoint-twice", "etcd://h:2379,h:2379", "twice"),
    url_case("etcd-bad-port", "etcd://127.0.0.1:99999", "port"),
    url_case("etcd-no-host", "etcd:///baton", "host"),
    url_case(
        "etcd-unreachable-secret",
        "etcd://baton:{secret}@127.0.0.1:{dead_port}/baton",
        "etcd://baton:***@",
        1,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_url(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One clear line naming the (redacted) URL, the right exit code, no secret."""
    check(case, tmp_path, request)


def test_catalogue_is_large_enough() -> None:
    """The URL catalogue keeps at least 40 cases, ids unique."""
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize(
    "command",
    [
        ("leader",),
        ("status",),
        ("status", "--json"),
        ("history", "cases.tick"),
        ("jobs", "--jobs", "badjobs"),
    ],
    ids=lambda c: "-".join(c),
)
@pytest.mark.parametrize("where", ["nodir/sub/baton.db", "missing.db"])
def test_read_commands_create_nothing(
    command: tuple[str, ...], where: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A read command against a missing SQLite file or directory: exit 2, nothing created."""
    case = Case(
        "read-creates-nothing",
        (*command, "--backend", f"sqlite:///{{tmp}}/{where}"),
        exit=2,
        jobs=JOBS,
        says="no database at",
    )
    before = sorted(p.name for p in tmp_path.iterdir())
    check(case, tmp_path, request)
    after = sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__")
    assert after == sorted([*before, "badjobs.py"]), after


def test_run_still_creates_the_embedded_database(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """`baton run` creates the embedded database (and its directory); the reads then work."""
    (tmp_path / "badjobs.py").write_text(JOBS)
    url = f"sqlite:///{tmp_path}/new/dir/baton.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    proc = subprocess.Popen(
        [sys.executable, "-m", "scheduler", "run", "--jobs", "badjobs", "--backend", url],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    leader = Case("leader-after-run", ("leader", "--json", "--backend", url), exit=0)
    try:
        # The file appears first and its tables a moment later; until then a read command
        # says it holds no Baton database (exit 2), and still creates nothing.
        wait_for(lambda: run_case(leader, tmp_path, request).returncode == 0, 30, "a leader")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert (tmp_path / "new" / "dir" / "baton.db").is_file()
