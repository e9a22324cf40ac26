"""The etcd:// and etcds:// URLs: what a valid one parses to, and how it is shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.backends import check_url
from scheduler.backends.etcd import parse_url
from scheduler.backends.etcd.ttl import ETCD_MIN_TTL, check_lease_ttl, lease_seconds
from scheduler.errors import ConfigError
from scheduler.ops.config import load_settings

SECRET = "p@ss:w/rd"


def test_endpoints_prefix_and_credentials() -> None:
    """Several endpoints in order (default port 2379), the prefix, the decoded password."""
    target = parse_url("etcd://baton:p%40ss%3Aw%2Frd@e0:2379,e1,[::1]:2380/team/baton")
    assert target.endpoints == (("e0", 2379), ("e1", 2379), ("::1", 2380))
    assert target.base_urls() == ("http://e0:2379", "http://e1:2379", "http://[::1]:2380")
    assert (target.prefix, target.user, target.password) == ("/team/baton", "baton", SECRET)
    assert target.shown == "etcd://baton:***@e0:2379,e1,[::1]:2380/team/baton"
    assert not target.tls


def test_default_prefix_and_no_credentials() -> None:
    """Without a path the prefix is /baton; without credentials there is no user."""
    target = parse_url("etcd://127.0.0.1:2379")
    assert (target.prefix, target.user, target.password) == ("/baton", None, None)


def test_etcds_with_files(tmp_path: Path) -> None:
    """etcds:// speaks TLS; cacert, cert and key name files and are shown (not secret)."""
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "crt", "key")}
    for path in files.values():
        path.write_text("x")
    url = (
        f"etcds://u:{SECRET.replace('@', '%40')}@localhost:2379/b?cacert={files['ca']}"
        f"&cert={files['crt']}&key={files['key']}"
    )
    target = parse_url(url)
    assert target.tls and target.base_urls() == ("https://localhost:2379",)
    assert (target.cacert, target.cert, target.key) == tuple(str(p) for p in files.values())
    assert "w/rd" not in check_url(url) and f"cacert={files['ca']}" in check_url(url)


def test_password_option_is_redacted() -> None:
    """?password= is hidden like the credentials."""
    shown = check_url("etcd://h:2379/baton?user=baton&password=hunter2")
    assert "hunter2" not in shown and "password=***" in shown


def test_lease_ttl_below_etcds_minimum_is_refused() -> None:
    """lease_ttl must be at least etcd's minimum TTL with an etcd backend, and only then."""
    with pytest.raises(ConfigError, match="lease_ttl"):
        check_lease_ttl(ETCD_MIN_TTL - 0.5)
    check_lease_ttl(ETCD_MIN_TTL)
    with pytest.raises(ConfigError, match="etcd's minimum lease TTL"):
        load_settings(None, {"backend": "etcd://h:2379", "lease_ttl": 1.5}, environ={})
    load_settings(None, {"backend": "redis://h:6379/0", "lease_ttl": 1.5}, environ={})


def test_lease_seconds_round_up() -> None:
    """etcd counts whole seconds: a TTL is rounded up, never down."""
    assert [lease_seconds(t) for t in (0.3, 1.0, 2.0, 2.01, 10.0)] == [1, 1, 2, 3, 10]
