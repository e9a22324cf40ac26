"""Bad-input catalogue for ``redlock://`` and ``rediss+redlock://``: the number of primaries,
duplicates, the Redis rules on credentials and options, and an unreachable group.

Each case asserts the edge contract of :func:`tests.badinput.harness.check` (exit code, one
line, no traceback, no sentinel secret).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.harness import Case, check, url_case
from tests.harness.redis_server import free_port

THREE = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3"


CASES = [
    url_case("redlock-one-primary", "redlock://127.0.0.1:1/0", "got 1 (one primary is"),
    url_case("redlock-two-primaries", "redlock://h:1,h:2/0", "got 2 (an even number"),
    url_case(
        "redlock-four-primaries-secret",
        "redlock://:{secret}@h:1,h:2,h:3,h:4/0",
        "Redlock needs 3 or 5 primaries, got 4",
    ),
    url_case(
        "redlock-seven-primaries", "redlock://" + ",".join(f"h:{i}" for i in range(1, 8)), "got 7"
    ),
    url_case("redlock-duplicate", "redlock://h:1,h:2,h:1/0", "named twice"),
    url_case("redlock-duplicate-default-port", "redlock://h,h:6379,g/0", "named twice"),
    url_case("redlock-empty-host", f"redlock://{THREE},/0", "the host is empty"),
    url_case("redlock-bad-port", "redlock://h:1,h:2,h:99999/0", "port"),
    url_case("redlock-unknown-option", f"redlock://{THREE}/0?frob=1", "unknown option"),
    url_case("redlock-acks-option", f"redlock://{THREE}/0?min_replicas_ack=1", "unknown option"),
    url_case("redlock-db-word", f"redlock://{THREE}/zero", "database"),
    url_case(
        "redlock-tls-off-secret",
        f"rediss+redlock://:{{secret}}@{THREE}/0?ssl_cert_reqs=none",
        "required",
    ),
    url_case("redlock-ssl-on-plain", f"redlock://{THREE}/0?ssl_ca_certs=/x", "unknown"),
    url_case("redlock-fragment-secret", f"redlock://:{{secret}}@{THREE}/0#x", "#fragment"),
    url_case("redlock-socket-timeout", f"redlock://{THREE}/0?socket_timeout=9", "op_timeout"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_redlock_url(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One clear line naming the (redacted) URL, the right exit code, no secret."""
    check(case, tmp_path, request)


def test_unreachable_redlock_group(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Three primaries nothing listens on: exit 1, one line, the URL redacted."""
    ports = ",".join(f"127.0.0.1:{free_port()}" for _ in range(3))
    url = f"redlock://:{{secret}}@{ports}/0"
    case = url_case("redlock-unreachable-secret", url, "redlock://:***@", 1)
    check(case, tmp_path, request)
