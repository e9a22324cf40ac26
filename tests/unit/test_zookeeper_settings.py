"""The one ZooKeeper settings type: what the config section and the backend both check.

``ZooKeeperSettings`` is the ``zookeeper:`` section of the config file and the backend's
options alike; these tests pin its defaults and the messages of the rules between its
fields, through ``load_settings`` (as an operator meets them) and directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.backends.zookeeper import ZooKeeperBackend, ZooKeeperSettings
from scheduler.errors import ConfigError
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.config import load_settings

ZK = {"BATON_BACKEND": "zookeeper://127.0.0.1:2181/baton"}


def test_defaults_follow_lease_ttl_in_the_config_and_ten_seconds_alone() -> None:
    """Unset, the session timeout is lease_ttl in the config and 10 s for a backend opened
    directly; the connection wait defaults to min(2 s, session timeout)."""
    settings = load_settings(environ={**ZK, "BATON_LEASE_TTL": "4"})
    options = settings.zookeeper_options()
    assert options is not None
    assert (options.session_timeout, options.connect_wait, options.use_tls) == (4.0, 2.0, False)
    alone = ZooKeeperSettings()
    assert (alone.session_seconds, alone.connect_wait) == (10.0, 2.0)
    assert ZooKeeperSettings(session_timeout=1.5).connect_wait == 1.5


def test_the_section_is_checked_only_for_a_zookeeper_backend() -> None:
    """A missing CA file matters only when the backend is ZooKeeper."""
    missing = {"BATON_ZOOKEEPER_CA_FILE": "/nonexistent/ca.pem"}
    assert load_settings(environ=missing).zookeeper_options() is None
    with pytest.raises(ConfigError, match=r"'zookeeper.ca_file': no such file: /nonexistent"):
        load_settings(environ={**ZK, **missing})


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"BATON_ZOOKEEPER_SESSION_TIMEOUT": "3", "BATON_ZOOKEEPER_CONNECTION_TIMEOUT": "5"},
            "config key 'zookeeper.connection_timeout': must not exceed "
            "zookeeper.session_timeout (5.0 s > 3.0 s): a connection that takes longer cannot "
            "save the session, which has expired on the server by then",
        ),
        (
            {"BATON_LEASE_TTL": "3", "BATON_ZOOKEEPER_CONNECTION_TIMEOUT": "5"},
            "config key 'zookeeper.connection_timeout': must not exceed "
            "zookeeper.session_timeout (5.0 s > 3.0 s)",
        ),
        (
            {"BATON_LEASE_TTL": "10", "BATON_ZOOKEEPER_SESSION_TIMEOUT": "5"},
            "config key 'zookeeper.session_timeout': must be at least lease_ttl "
            "(5.0 s < 10.0 s): the session, and with it the leader's latch node, could "
            "expire on the server while this replica still believes it leads",
        ),
        (
            {"BATON_ZOOKEEPER_CERT_FILE": "/etc/hostname"},
            "config key 'zookeeper.key_file': zookeeper.cert_file and zookeeper.key_file "
            "must be given together",
        ),
        (
            {"BATON_ZOOKEEPER_SESSION_TIMEOUT": "0.5"},
            "config key 'zookeeper.session_timeout': must be a number of seconds from 1 to "
            "3600, got 0.5 (from BATON_ZOOKEEPER_SESSION_TIMEOUT)",
        ),
        (
            {"BATON_ZOOKEEPER_CONNECTION_TIMEOUT": "0.01"},
            "config key 'zookeeper.connection_timeout': must be a number of seconds from 0.1 "
            "to 600, got 0.01 (from BATON_ZOOKEEPER_CONNECTION_TIMEOUT)",
        ),
    ],
)
def test_contradicting_or_out_of_bounds_settings_name_their_keys(
    environ: dict[str, str], message: str
) -> None:
    """Each rule of the section refuses with the key and the message operators know."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={**ZK, **environ})
    assert str(caught.value).startswith(message)


def test_for_lease_fills_the_session_timeout_and_refuses_a_shorter_one() -> None:
    """for_lease(): an unset session timeout becomes lease_ttl; a shorter one is refused."""
    timings = LeaseTimings.of(6)
    assert ZooKeeperSettings().for_lease(timings).session_timeout == 6.0
    assert ZooKeeperSettings(session_timeout=8.0).for_lease(timings).session_timeout == 8.0
    with pytest.raises(ConfigError, match="must be at least lease_ttl"):
        ZooKeeperSettings(session_timeout=5.0).for_lease(timings)


def test_a_backend_opened_directly_refuses_contradicting_settings_before_connecting(
    tmp_path: Path,
) -> None:
    """The backend checks its settings too: half a client certificate is refused at once."""
    cert = tmp_path / "cert.pem"
    cert.write_text("not used")
    with pytest.raises(ConfigError, match="must be given together"):
        ZooKeeperBackend.from_url(
            "zookeeper://127.0.0.1:1/baton",
            op_timeout=1.0,
            options=ZooKeeperSettings(cert_file=str(cert)),
        )
