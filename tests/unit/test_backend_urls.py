"""Backend URL parsers: typed options, the allow-lists, and redaction of every form."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.backends import BackendURL, check_url, redact
from scheduler.backends.redis import parse_url as parse_redis
from scheduler.backends.sqlite import path_from_url
from scheduler.backends.zookeeper import parse_url as parse_zookeeper
from scheduler.errors import ConfigError
from scheduler.ops.config import Settings, load_settings
from tests.badinput.harness import SENTINEL

ENCODED = "Hunter2-s3cr3t%2Fw%40rd"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{SENTINEL}@h:1/0", "redis://:***@h:1/0"),
        (f"redis://me:{SENTINEL}@h:1/0", "redis://me:***@h:1/0"),
        (f"redis://{SENTINEL}@h:1/0", "redis://***@h:1/0"),
        (f"redis://h:1/0?password={ENCODED}&db=2", "redis://h:1/0?password=***&db=2"),
        (f"redis://h:1/0?secret={ENCODED}", "redis://h:1/0?secret=***"),
        (f"redis://h:1/0#{SENTINEL}", "redis://h:***@rd"),
        ("redis://h:1/0#frag", "redis://h:1/0#***"),
        (f"zookeeper://u:{SENTINEL}@h1:1,h2:2/c", "zookeeper://u:***@h1:1,h2:2/c"),
        (f"zookeeper://a%20b:{SENTINEL}@h/c", "zookeeper://***@h/c"),
        (f"user:{SENTINEL}@redis://h", "user:***@redis://h"),
        ("sqlite:////tmp/a@b.db", "sqlite:////tmp/a@b.db"),
        (f"sqlite://u:{SENTINEL}@/x.db", "sqlite://u:***@/x.db"),
    ],
)
def test_redact_hides_every_form_of_password(url: str, shown: str) -> None:
    """Credentials up to the last '@', secret option values and fragments become ***."""
    assert redact(url) == shown
    assert SENTINEL not in redact(url)


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SENTINEL}@127.0.0.1:6380/3",
        f"redis://:{ENCODED}@127.0.0.1:6380/3",
        f"redis://127.0.0.1:6380/3?password={ENCODED}",
        f"redis://127.0.0.1:6380?db=3&password={ENCODED}",
    ],
)
def test_redis_password_forms_parse_to_the_same_target(url: str) -> None:
    """Typed, encoded, or as ?password=: the same password, host, port and db."""
    target = parse_redis(url)
    assert (target.host, target.port, target.db, target.password) == (
        "127.0.0.1",
        6380,
        3,
        SENTINEL,
    )
    assert target.username is None and not target.tls
    assert SENTINEL not in repr(target) and SENTINEL not in target.shown


def test_redis_defaults_ipv6_user_and_tls(tmp_path: Path) -> None:
    """Port 6379 and db 0 by default; bracketed IPv6; a user; rediss with a CA file."""
    plain = parse_redis("redis://localhost")
    assert (plain.host, plain.port, plain.db, plain.password) == ("localhost", 6379, 0, None)
    six = parse_redis("redis://me:pw@[::1]:7000/2")
    assert (six.host, six.port, six.db, six.username) == ("::1", 7000, 2, "me")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    tls = parse_redis(f"rediss://h/0?ssl_ca_certs={ca}&ssl_cert_reqs=required")
    assert tls.tls and tls.ssl_ca_certs == str(ca)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://h/0?frob=1", "unknown option 'frob'"),
        ("redis://h/0?db=1&db=1", "given twice"),
        ("redis://h/abc", "number from 0 to 9999"),
        ("redis://h/10000", "number from 0 to 9999"),
        ("redis://h:0", "port"),
        ("redis://h:65536", "port"),
        ("redis://", "host is empty"),
        ("redis://::1", "brackets"),
        ("redis://h/0?ssl_ca_certs=/x", "unknown option"),
        ("rediss://h/0?ssl_check_hostname=0", "stay on"),
        ("redis://h/0?timeout=5", "op_timeout"),
        ("redis://h/0?password=a&password=b", "given twice"),
        (f"redis://h/0?password={SENTINEL}", "%40"),
    ],
)
def test_redis_refusals_list_the_allowed_options(url: str, says: str) -> None:
    """Each refusal is a ConfigError on 'backend' naming the problem and the options."""
    with pytest.raises(ConfigError) as caught:
        parse_redis(url)
    message = str(caught.value)
    assert caught.value.key == "backend" and says in message
    assert "options: db, username, password, client_name" in message
    assert "\n" not in message and SENTINEL not in message


def test_zookeeper_digest_hosts_and_chroot() -> None:
    """Digest credentials as typed, several hosts with default ports, the chroot."""
    target = parse_zookeeper(f"zookeeper://baton:{SENTINEL}@h1,[::1]:2182,h3:2183/a/b")
    assert target.hosts == "h1:2181,[::1]:2182,h3:2183"
    assert (target.root, target.user, target.password) == ("/a/b", "baton", SENTINEL)
    assert SENTINEL not in repr(target)
    assert parse_zookeeper("zookeeper://h").root == "/baton"
    with pytest.raises(ConfigError, match=r"options: none\); session and TLS"):
        parse_zookeeper("zookeeper://h/b?session_timeout=5")


def test_sqlite_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative to the current directory, absolute with four slashes, escapes decoded."""
    monkeypatch.chdir(tmp_path)
    assert path_from_url("sqlite:///x.db") == tmp_path / "x.db"
    assert path_from_url(f"sqlite:///{tmp_path}/a%20b.db") == tmp_path / "a b.db"
    with pytest.raises(ConfigError, match="three slashes"):
        path_from_url("sqlite://host/x.db")


def test_unknown_scheme_is_refused() -> None:
    """An unknown or missing scheme names the schemes Baton has."""
    with pytest.raises(ConfigError, match="expected one of sqlite://, redis://"):
        check_url("mysql://h/db")


def test_backend_url_shows_itself_redacted() -> None:
    """str, repr, f-strings and model_dump of the settings hide the password."""
    url = f"redis://:{SENTINEL}@h:1/0"
    settings = load_settings(None, {"backend": url}, environ={})
    assert isinstance(settings.backend, BackendURL)
    for text in (
        str(settings.backend),
        repr(settings),
        f"{settings}",
        str(settings.model_dump()),
        settings.model_dump_json(),
    ):
        assert SENTINEL not in text
    assert settings.backend.reveal() == url and settings.backend == url
    assert Settings().backend == "sqlite:///.baton/baton.db"


def test_bad_url_in_settings_names_where_it_came_from() -> None:
    """A bad URL from the environment is refused at load, naming the variable."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"BATON_BACKEND": f"redis://:{SENTINEL}@h/x"})
    assert "BATON_BACKEND" in str(caught.value) and SENTINEL not in str(caught.value)
