"""Settings: file < env < flags; every bad value is one ConfigError naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.config import DEFAULT_BACKEND, load_settings
from scheduler.errors import ConfigError
from scheduler.timings import LeaseTimings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "baton.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    """Without any source, the embedded backend and the documented defaults apply."""
    s = load_settings(environ={})
    assert s.backend == DEFAULT_BACKEND and s.cluster == "default" and s.jobs == ["jobs"]
    t = s.timings()
    assert (t.lease_ttl, t.renew_interval, t.renew_deadline) == (10, 10 / 3, 20 / 3)
    assert s.shutdown_grace == 30 and s.history_limit == 100 and s.log_format == "auto"


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    """A flag beats BATON_<KEY>, which beats the file."""
    path = write(tmp_path, "lease_ttl: 6\ncluster: file\nreplica_id: from-file\n")
    env = {"BATON_CLUSTER": "env", "BATON_REPLICA_ID": "from-env", "BATON_JOBS": "a, b"}
    s = load_settings(path, {"replica_id": "from-flag"}, environ=env)
    assert (s.lease_ttl, s.cluster, s.replica_id, s.jobs) == (6, "env", "from-flag", ["a", "b"])


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    """A mistyped key is refused and the closest real key is suggested."""
    with pytest.raises(ConfigError, match=r"'lease_tll': unknown key .*did you mean 'lease_ttl'"):
        load_settings(write(tmp_path, "lease_tll: 3\n"), environ={})


def test_unrelated_baton_env_vars_are_ignored() -> None:
    """Kubernetes injects BATON_PORT etc. for a Service named baton: not an error."""
    assert load_settings(environ={"BATON_PORT": "tcp://10.0.0.1:80"}).cluster == "default"


@pytest.mark.parametrize(
    ("source", "key", "fragment"),
    [
        ({"environ": {"BATON_LEASE_TTL": "ten"}}, "lease_ttl", "BATON_LEASE_TTL"),
        ({"overrides": {"history_limit": 0}}, "history_limit", "greater than or equal to 1"),
        ({"overrides": {"log_format": "xml"}}, "log_format", "'json', 'console' or 'auto'"),
        ({"overrides": {"cluster": "a b"}}, "cluster", "pattern"),
    ],
)
def test_bad_values_name_key_and_source(
    source: dict[str, dict[str, object]], key: str, fragment: str
) -> None:
    """Wrong types and ranges name the key and where the value came from."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ=source.get("environ", {}), overrides=source.get("overrides"))
    assert info.value.key == key and fragment in str(info.value)


def test_inconsistent_timings_name_both_fields() -> None:
    """ttl > renew_deadline > renew_interval, and the error names both fields."""
    with pytest.raises(ConfigError, match=r"'renew_deadline'.*lease_ttl"):
        load_settings(overrides={"lease_ttl": 3, "renew_deadline": 3}, environ={})
    with pytest.raises(ConfigError, match=r"'renew_interval'.*renew_deadline"):
        LeaseTimings.of(10, renew_interval=5, renew_deadline=4)


def test_file_problems_are_config_errors(tmp_path: Path) -> None:
    """Missing file, broken YAML, or a list instead of a mapping: one clear error each."""
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.yaml", environ={})
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_settings(write(tmp_path, "a: 1\nb: [\n"), environ={})
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(write(tmp_path, "- 1\n"), environ={})


def test_op_timeout_leaves_room_for_two_attempts() -> None:
    """A backend call is bounded to half the gap between renew interval and deadline."""
    t = LeaseTimings.of(3)
    assert t.op_timeout == pytest.approx((2 - 1) / 2)
    assert LeaseTimings.of(60).op_timeout == 2.0


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("zookeeper://u:pw@h1:2181,h2:2181/baton", "zookeeper://u:***@h1:2181,h2:2181/baton"),
        ("redis://:s3cret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        (
            "rediss://me:pw@host:1/0?ssl_ca_certs=/ca.pem",
            "rediss://me:***@host:1/0?ssl_ca_certs=/ca.pem",
        ),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_redact_hides_passwords_in_every_url_form(url: str, shown: str) -> None:
    """Passwords never reach messages, also in multi-host ZooKeeper URLs."""
    from scheduler.backends import redact

    assert redact(url) == shown
