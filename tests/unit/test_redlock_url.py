"""The ``redlock://`` URL parser: primaries, quorum, TLS form, redaction, refusals."""

from __future__ import annotations

import pytest

from scheduler.backends import check_url
from scheduler.backends.redlock import parse_url
from scheduler.errors import ConfigError


def test_three_primaries_share_credentials_and_database() -> None:
    """Each primary gets the URL's credentials and database; a majority is 2 of 3."""
    target = parse_url("redlock://u:s3cret@a:7000,b,[::1]:7002/4?client_name=baton")
    assert [(p.host, p.port) for p in target.primaries] == [("a", 7000), ("b", 6379), ("::1", 7002)]
    assert {(p.username, p.password, p.db, p.client_name) for p in target.primaries} == {
        ("u", "s3cret", 4, "baton")
    }
    assert target.quorum == 2
    assert "s3cret" not in target.shown and "s3cret" not in repr(target)


def test_five_primaries_and_tls() -> None:
    """rediss+redlock:// speaks TLS to each of 5 primaries; a majority is 3."""
    target = parse_url("rediss+redlock://:pw@h1,h2,h3,h4,h5/0")
    assert len(target.primaries) == 5 and target.quorum == 3
    assert all(p.tls for p in target.primaries)
    assert (
        check_url("rediss+redlock://:pw@h1,h2,h3,h4,h5/0")
        == "rediss+redlock://:***@h1,h2,h3,h4,h5/0"
    )


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redlock://a", "got 1"),
        ("redlock://a,b", "got 2"),
        ("redlock://a,b,c,d", "got 4"),
        ("redlock://a,b,c,d,e,f,g", "got 7"),
        ("redlock://a,b,a", "named twice"),
        ("redlock://a,b,c?min_replicas_ack=1", "unknown option"),
        ("rediss+redlock://a,b,c?ssl_cert_reqs=none", "required"),
    ],
)
def test_refused(url: str, says: str) -> None:
    """One ConfigError for the backend key, naming the problem and the form."""
    with pytest.raises(ConfigError, match=says) as caught:
        parse_url(url)
    assert "redlock://" in str(caught.value)
