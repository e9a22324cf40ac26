"""Bad-input catalogue: ``BATON_*`` environment variables (read into the key's type once).

Every case runs ``baton status``: the settings are refused before any backend is opened.
The message names the key and the variable the bad value came from.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.harness import Case, check


def env(id: str, name: str, value: str, says: str = "") -> Case:
    """``baton status`` with ``name=value``: exit 2, one line naming the variable."""
    return Case(id, ("status",), exit=2, env={name: value}, says=says or name)


CASES = [
    env("lease-ttl-nan", "BATON_LEASE_TTL", "nan"),
    env("lease-ttl-inf", "BATON_LEASE_TTL", "inf"),
    env("lease-ttl-minus-infinity", "BATON_LEASE_TTL", "-Infinity"),
    env("lease-ttl-overflows-to-inf", "BATON_LEASE_TTL", "1e400"),
    env("lease-ttl-bool", "BATON_LEASE_TTL", "true"),
    env("lease-ttl-empty", "BATON_LEASE_TTL", ""),
    env("lease-ttl-with-unit", "BATON_LEASE_TTL", "10s"),
    env("lease-ttl-arabic-digits", "BATON_LEASE_TTL", "\u0661\u0660"),
    env("lease-ttl-tiny", "BATON_LEASE_TTL", "0.001", says="from 1 to 3600"),
    env("lease-ttl-huge", "BATON_LEASE_TTL", "1e300", says="from 1 to 3600"),
    env("renew-interval-zero", "BATON_RENEW_INTERVAL", "0"),
    env("renew-deadline-negative", "BATON_RENEW_DEADLINE", "-3"),
    env("shutdown-grace-negative", "BATON_SHUTDOWN_GRACE", "-0.5"),
    env("shutdown-grace-nan", "BATON_SHUTDOWN_GRACE", "NaN"),
    env("history-limit-float", "BATON_HISTORY_LIMIT", "1.5"),
    env("history-limit-hex", "BATON_HISTORY_LIMIT", "0x10"),
    env("history-limit-huge", "BATON_HISTORY_LIMIT", "9" * 5000),
    env("exit-on-lost-word", "BATON_EXIT_ON_LOST", "maybe"),
    env("exit-on-lost-two", "BATON_EXIT_ON_LOST", "2"),
    env("log-format-upper", "BATON_LOG_FORMAT", "XML"),
    env("http-port-too-big", "BATON_HTTP_PORT", "65536"),
    env("http-port-negative", "BATON_HTTP_PORT", "-1"),
    env("http-port-float", "BATON_HTTP_PORT", "80.0"),
    env("zookeeper-session-nan", "BATON_ZOOKEEPER_SESSION_TIMEOUT", "nan"),
    env("zookeeper-tls-word", "BATON_ZOOKEEPER_TLS", "sure"),
    env("cluster-space", "BATON_CLUSTER", "a b"),
    env("cluster-newline", "BATON_CLUSTER", "prod\nINFO forged"),
    env("replica-id-newline", "BATON_REPLICA_ID", "r1\nbaton: ok"),
    env("replica-id-escape", "BATON_REPLICA_ID", "r1\x1b[2J"),
    env("replica-id-100-kb", "BATON_REPLICA_ID", "r" * 100_000),
    env("replica-id-empty", "BATON_REPLICA_ID", ""),
    env("jobs-empty", "BATON_JOBS", ""),
    env("jobs-path", "BATON_JOBS", "jobs,../evil"),
    env("config-missing", "BATON_CONFIG", "{tmp}/nope.yaml", says="file not found"),
    env("config-directory", "BATON_CONFIG", "{tmp}", says="cannot read"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_env(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One line naming the variable, exit 2, no traceback, no secret."""
    check(case, tmp_path, request)
