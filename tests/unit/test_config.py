"""Settings: file < env < flags; every bad value is one ConfigError naming its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.errors import ConfigError
from scheduler.leadership.timings import LeaseTimings
from scheduler.ops.config import DEFAULT_BACKEND, load_settings


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
        ({"overrides": {"history_limit": 0}}, "history_limit", "whole number from 1 to 10000"),
        ({"overrides": {"log_format": "xml"}}, "log_format", "'json', 'console' or 'auto'"),
        ({"overrides": {"cluster": "a b"}}, "cluster", "1 to 128 letters, digits"),
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


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("lease_ttl: true\n", "lease_ttl", "got True"),
        ("lease_ttl: .nan\n", "lease_ttl", "got nan"),
        ("lease_ttl: .inf\n", "lease_ttl", "from 1 to 3600"),
        ("lease_ttl: 0.001\n", "lease_ttl", "from 1 to 3600"),
        ("lease_ttl: '10'\n", "lease_ttl", "got '10'"),
        ("history_limit: 2.0\n", "history_limit", "whole number"),
        ("exit_on_lost: 1\n", "exit_on_lost", "true or false"),
        ('replica_id: "a\\nb"\n', "replica_id", "got 'a\\nb'"),
        ("cluster: '..'\n", "cluster", "starting with a letter, digit or '_'"),
        ("http:\n  prot: 1\n", "http.prot", "did you mean http.port"),
    ],
)
def test_file_values_are_strict_and_bounded(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    """A YAML bool or string is not a number, NaN and inf are refused, names have a charset."""
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert info.value.key == key and fragment in str(info.value), str(info.value)


def test_ints_are_accepted_where_seconds_are_expected(tmp_path: Path) -> None:
    """Strict types still take an integer for a number of seconds."""
    s = load_settings(write(tmp_path, "lease_ttl: 6\nshutdown_grace: 0\n"), environ={})
    assert (s.lease_ttl, s.shutdown_grace) == (6.0, 0.0)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("BATON_LEASE_TTL", " 12.5 ", ("lease_ttl", 12.5)),
        ("BATON_HISTORY_LIMIT", "7", ("history_limit", 7)),
        ("BATON_EXIT_ON_LOST", "Yes", ("exit_on_lost", True)),
        ("BATON_EXIT_ON_LOST", "off", ("exit_on_lost", False)),
    ],
)
def test_env_strings_are_read_into_the_keys_type(
    variable: str, value: str, expected: tuple[str, object]
) -> None:
    """BATON_* strings become numbers and booleans once, at the edge."""
    settings = load_settings(environ={variable: value})
    assert getattr(settings, expected[0]) == expected[1]


@pytest.mark.parametrize("value", ["nan", "inf", "-Infinity", "1e400", "\u0661\u0660", "true", ""])
def test_env_numbers_must_be_finite_ascii(value: str) -> None:
    """NaN, infinities, non-ASCII digits and words are refused, naming the variable."""
    with pytest.raises(ConfigError, match="BATON_LEASE_TTL") as info:
        load_settings(environ={"BATON_LEASE_TTL": value})
    assert info.value.key == "lease_ttl"


def test_timings_bounds_name_both_fields() -> None:
    """lease_ttl within 1..3600 s; renew_deadline above 1.2 x renew_interval, naming both."""
    with pytest.raises(ConfigError, match="lease_ttl"):
        LeaseTimings.of(0.5)
    with pytest.raises(ConfigError, match="lease_ttl"):
        LeaseTimings.of(float("nan"))
    with pytest.raises(ConfigError, match=r"'renew_interval'.*renew_deadline"):
        LeaseTimings.of(10, renew_interval=5, renew_deadline=5.5)
    assert LeaseTimings.of(1).op_timeout >= 0.05


def test_yaml_aliases_and_duplicate_keys_are_refused(tmp_path: Path) -> None:
    """A billion-laughs file is refused before it expands; a key given twice is an error."""
    bomb = "cluster: &a [x, x, x]\nreplica_id: [*a, *a, *a]\n"
    with pytest.raises(ConfigError, match="aliases"):
        load_settings(write(tmp_path, bomb), environ={})
    with pytest.raises(ConfigError, match="duplicate key 'lease_ttl'"):
        load_settings(write(tmp_path, "lease_ttl: 5\nlease_ttl: 6\n"), environ={})


def test_huge_and_non_utf8_files_are_short_errors(tmp_path: Path) -> None:
    """Over 1 MiB, or bytes that are not UTF-8: one short error, no content echoed."""
    big = write(tmp_path, "# " + "x" * (1 << 20))
    with pytest.raises(ConfigError, match="larger than 1 MiB") as info:
        load_settings(big, environ={})
    assert len(str(info.value)) < 300
    raw = tmp_path / "latin1.yaml"
    raw.write_bytes(b"cluster: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at 12\)"):
        load_settings(raw, environ={})


def test_bad_values_are_echoed_short_and_printable() -> None:
    """A 1 MB value is cut to about 200 characters; control characters are escaped."""
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"replica_id": "r\n" * 500_000}, environ={})
    message = str(info.value)
    assert len(message) < 400 and "\n" not in message and "(1000000 characters)" in message


def test_backend_value_is_never_echoed() -> None:
    """A bad backend value may hold a password: the error does not repeat it."""
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"backend": "redis://:pw@h/0" + "x" * 5000}, environ={})
    assert "pw" not in str(info.value)


def test_max_workers_and_log_level_default_parse_and_bounds() -> None:
    """max_workers (the job pool) defaults to 32 and takes 1 to 1024, from BATON_MAX_WORKERS
    too; log_level defaults to info and takes debug, info, warning or error."""
    s = load_settings(environ={})
    assert (s.max_workers, s.log_level) == (32, "info")
    s = load_settings(environ={"BATON_MAX_WORKERS": "8", "BATON_LOG_LEVEL": "debug"})
    assert (s.max_workers, s.log_level) == (8, "debug")
    for bad in ("0", "1025", "2.5"):
        with pytest.raises(ConfigError, match=r"'max_workers'.*whole number from 1 to 1024"):
            load_settings(environ={"BATON_MAX_WORKERS": bad})
    with pytest.raises(ConfigError, match=r"'log_level'.*'debug', 'info', 'warning' or 'error'"):
        load_settings(overrides={"log_level": "verbose"}, environ={})
