"""Bad-input catalogue: config file keys and the file itself (README, "Configuration").

Every case runs ``baton status --config {tmp}/baton.yaml``: the settings are read and refused
before any backend is opened, so no server is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.harness import Case, check

STATUS = ("status", "--config", "{tmp}/baton.yaml")


def key(id: str, config: str, says: str) -> Case:
    """A config file case: exit 2, one line naming ``says`` (the key, or the problem)."""
    return Case(id, STATUS, exit=2, config=config, says=says)


def _bomb() -> str:
    """A "billion laughs" file over real keys: nine levels of nine aliases each."""
    keys = ["cluster", "replica_id", "backend", "log_format", "jobs", "renew_interval"]
    keys += ["renew_deadline", "shutdown_grace", "history_limit"]
    text = f"{keys[0]}: &k0 [" + ", ".join(["lol"] * 9) + "]\n"
    for level, name in enumerate(keys[1:], start=1):
        text += f"{name}: &k{level} [" + ", ".join([f"*k{level - 1}"] * 9) + "]\n"
    return text + "lease_ttl: [" + ", ".join([f"*k{len(keys) - 1}"] * 9) + "]\n"


CASES = [
    # lease_ttl: a finite number of seconds from 1 to 3600; a YAML bool is not a number.
    key("lease-ttl-nan", "lease_ttl: .nan\n", "lease_ttl"),
    key("lease-ttl-inf", "lease_ttl: .inf\n", "lease_ttl"),
    key("lease-ttl-minus-inf", "lease_ttl: -.inf\n", "lease_ttl"),
    key("lease-ttl-negative", "lease_ttl: -5\n", "lease_ttl"),
    key("lease-ttl-zero", "lease_ttl: 0\n", "from 1 to 3600"),
    key("lease-ttl-tiny", "lease_ttl: 0.001\n", "from 1 to 3600"),
    key(
        "lease-ttl-below-etcd-minimum",
        "backend: etcd://127.0.0.1:2379\nlease_ttl: 1.5\n",
        "etcd's minimum lease TTL",
    ),
    key("lease-ttl-huge", "lease_ttl: 1.0e+300\n", "from 1 to 3600"),
    key("lease-ttl-over-an-hour", "lease_ttl: 3601\n", "from 1 to 3600"),
    key("lease-ttl-bool", "lease_ttl: true\n", "lease_ttl"),
    key("lease-ttl-quoted", "lease_ttl: '10'\n", "lease_ttl"),
    key("lease-ttl-list", "lease_ttl: [10]\n", "lease_ttl"),
    key("lease-ttl-null", "lease_ttl: ~\n", "lease_ttl"),
    key("lease-ttl-date", "lease_ttl: 2026-01-01\n", "lease_ttl"),
    key("lease-ttl-5000-digits", "lease_ttl: " + "9" * 5000 + "\n", "cannot read"),
    # renew_interval and renew_deadline: bounded, and validated together naming both.
    key("renew-interval-nan", "renew_interval: .nan\n", "renew_interval"),
    key("renew-interval-tiny", "renew_interval: 0.001\n", "at least 0.1"),
    key(
        "renew-deadline-not-below-ttl",
        "lease_ttl: 10\nrenew_deadline: 10\n",
        "renew_deadline': must be less than lease_ttl",
    ),
    key(
        "renew-interval-too-close-to-deadline",
        "lease_ttl: 10\nrenew_interval: 5\nrenew_deadline: 5.5\n",
        "renew_deadline",
    ),
    key("renew-deadline-bool", "renew_deadline: false\n", "renew_deadline"),
    # shutdown_grace: 0 to 3600 s.
    key("shutdown-grace-negative", "shutdown_grace: -1\n", "shutdown_grace"),
    key("shutdown-grace-inf", "shutdown_grace: .inf\n", "shutdown_grace"),
    key("shutdown-grace-huge", "shutdown_grace: 1.0e+9\n", "from 0 to 3600"),
    key("shutdown-grace-string", "shutdown_grace: thirty\n", "shutdown_grace"),
    # history_limit: a whole number from 1 to 10000.
    key("history-limit-zero", "history_limit: 0\n", "from 1 to 10000"),
    key("history-limit-float", "history_limit: 5.5\n", "history_limit"),
    key("history-limit-bool", "history_limit: true\n", "history_limit"),
    key("history-limit-huge", "history_limit: 100000000000000000000\n", "from 1 to 10000"),
    # Booleans and choices.
    key("exit-on-lost-int", "exit_on_lost: 1\n", "true or false"),
    key("exit-on-lost-word", "exit_on_lost: maybe\n", "true or false"),
    key("log-format-unknown", "log_format: xml\n", "log_format"),
    key("log-format-list", "log_format: [json]\n", "log_format"),
    # Names: cluster and replica_id have a documented charset and length.
    key("cluster-empty", "cluster: ''\n", "cluster"),
    key("cluster-newline", 'cluster: "a\\nb"\n', "cluster"),
    key("cluster-slash", "cluster: a/b\n", "cluster"),
    key("cluster-dot-dot", "cluster: '..'\n", "cluster"),
    key("cluster-129-chars", f"cluster: {'c' * 129}\n", "1 to 128"),
    key("cluster-unicode", "cluster: clüster\n", "cluster"),
    key("cluster-number", "cluster: 5\n", "cluster"),
    key("replica-id-newline", 'replica_id: "r1\\nINFO forged line"\n', "replica_id"),
    key("replica-id-escape-sequence", 'replica_id: "r1\\e[2J"\n', "replica_id"),
    key("replica-id-bidi", 'replica_id: "r1\\u202eevil"\n', "replica_id"),
    key("replica-id-1-mb", f"replica_id: {'r' * 1_000_000}\n", "replica_id"),
    key("replica-id-list", "replica_id: [a, b]\n", "replica_id"),
    # jobs: 1 to 64 dotted module names.
    key("jobs-empty-list", "jobs: []\n", "jobs"),
    key("jobs-not-a-list", "jobs: billing\n", "jobs"),
    key("jobs-path", "jobs: [../billing]\n", "jobs"),
    key("jobs-too-many", "jobs: [" + ", ".join(f"m{i}" for i in range(100)) + "]\n", "jobs"),
    key("jobs-number", "jobs: [5]\n", "jobs"),
    # Sections.
    key("http-port-bool", "http:\n  port: true\n", "http.port"),
    key("http-port-too-big", "http:\n  port: 70000\n", "http.port"),
    key("http-port-float", "http:\n  port: 8080.0\n", "http.port"),
    key("http-host-newline", 'http:\n  host: "0.0.0.0\\nx"\n', "http.host"),
    key("http-unknown-key", "http:\n  prot: 8080\n", "did you mean http.port"),
    key("zookeeper-session-nan", "zookeeper:\n  session_timeout: .nan\n", "session_timeout"),
    key("zookeeper-connection-zero", "zookeeper:\n  connection_timeout: 0\n", "connection_timeout"),
    key("zookeeper-tls-word", "zookeeper:\n  tls: 'yes'\n", "zookeeper.tls"),
    key("zookeeper-ca-file-newline", 'zookeeper:\n  ca_file: "/a\\nb"\n', "zookeeper.ca_file"),
    key("section-not-a-mapping", "zookeeper: 5\n", "zookeeper"),
    # Keys and the file itself.
    key("unknown-key", "lease_tll: 3\n", "did you mean 'lease_ttl'"),
    key("unknown-key-huge", f"? {'k' * 5000}\n: 1\n", "unknown key"),
    key("unknown-key-newline", '"a\\nb": 1\n', "unknown key"),
    key("duplicate-key", "lease_ttl: 5\nlease_ttl: 6\n", "duplicate key"),
    key("alias-bomb", _bomb(), "aliases"),
    key("alias-simple", "cluster: &c prod\nreplica_id: *c\n", "aliases"),
    key("file-too-big", "# " + "x" * (1 << 20) + "\n", "larger than 1 MiB"),
    key("file-nested-too-deep", "cluster: " + "[" * 50_000 + "\n", "baton.yaml"),
    key("file-not-yaml", "a: [\n", "not valid YAML"),
    key("file-nul-byte", "cluster: a\x00b\n", "not valid YAML"),
    key("file-top-level-list", "- lease_ttl: 5\n", "mapping"),
    key("file-python-tag", "cluster: !!python/object:os.system [ls]\n", "not valid YAML"),
    Case("file-is-a-directory", ("status", "--config", "{tmp}"), exit=2, says="directory"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_config(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One line naming the key or the file problem, exit 2, no traceback, no secret."""
    check(case, tmp_path, request)


#: Files whose bytes are not UTF-8 text (the harness writes text, so these are raw bytes).
RAW_FILES = [
    ("file-latin-1", b"cluster: caf\xe9\n"),
    ("file-utf-16", "cluster: prod\n".encode("utf-16")),
    ("file-binary", bytes(range(256)) * 4),
]


@pytest.mark.parametrize(("id", "content"), RAW_FILES, ids=[c[0] for c in RAW_FILES])
def test_config_file_not_utf8(
    id: str, content: bytes, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A config file that is not UTF-8 text is one short line, exit 2."""
    (tmp_path / "raw.yaml").write_bytes(content)
    case = Case(id, ("status", "--config", "{tmp}/raw.yaml"), exit=2, says="not UTF-8")
    check(case, tmp_path, request)
