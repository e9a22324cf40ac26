"""Bad-input catalogue: command-line flags and arguments, including click's usage errors.

Usage errors (unknown option or command, bad option value, missing argument) are one line,
``baton: error: ... (see 'baton <command> --help')``, exit 2. Flags that override config keys
are validated like the keys. Every case fails before a backend is opened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.badinput.harness import Case, check

BACKEND = ("--backend", "sqlite:///{tmp}/b.db")


def flag(id: str, args: tuple[str, ...], says: str) -> Case:
    """``baton <args>``: exit 2, one line containing ``says``."""
    return Case(id, args, exit=2, says=says)


CASES = [
    # click's usage errors, one line each, pointing at the command's --help.
    flag("unknown-option", ("status", "--frob"), "no such option"),
    flag("unknown-option-newline", ("status", "--fr\nob"), "see 'baton status --help'"),
    flag("unknown-option-huge", ("status", "--" + "f" * 100_000), "no such option"),
    flag("unknown-command", ("frobnicate",), "no such command"),
    flag("unknown-command-escape", ("\x1b[2Jx",), "no such command"),
    flag("missing-argument", ("history",), "missing argument"),
    flag("missing-option-value", ("status", "--config"), "requires an argument"),
    flag("extra-argument", ("status", "extra"), "unexpected extra argument"),
    flag("log-format-unknown", ("run", "--log-format", "xml"), "--log-format"),
    flag("config-is-directory", ("status", "--config", "{tmp}"), "directory"),
    # history --limit: a whole number from 1 to 10000.
    flag("history-limit-nan", ("history", "j", "--limit", "nan"), "--limit"),
    flag("history-limit-inf", ("history", "j", "--limit", "inf"), "--limit"),
    flag("history-limit-zero", ("history", "j", "--limit", "0"), "--limit"),
    flag("history-limit-negative", ("history", "j", "--limit", "-1"), "--limit"),
    flag("history-limit-float", ("history", "j", "--limit", "1.5"), "--limit"),
    flag("history-limit-huge", ("history", "j", "--limit", "9" * 30), "--limit"),
    flag("history-limit-bool", ("history", "j", "--limit", "true"), "--limit"),
    # history JOB: a job name (the charset @singleton_job accepts).
    flag("history-job-empty", ("history", ""), "job name"),
    flag("history-job-newline", ("history", "a\nb"), "job name"),
    flag("history-job-long", ("history", "j" * 5000), "job name"),
    flag("history-job-slash", ("history", "a/b"), "job name"),
    flag("history-job-unicode", ("history", "jöb"), "job name"),
    # resign --wait: finite seconds from 0 to 3600.
    flag("resign-wait-nan", ("resign", "--wait", "nan"), "--wait"),
    flag("resign-wait-inf", ("resign", "--wait", "inf"), "--wait"),
    flag("resign-wait-minus-inf", ("resign", "--wait", "-inf"), "--wait"),
    flag("resign-wait-negative", ("resign", "--wait", "-1"), "--wait"),
    flag("resign-wait-huge", ("resign", "--wait", "1e300"), "--wait"),
    flag("resign-wait-word", ("resign", "--wait", "soon"), "--wait"),
    # Flags that override config keys: the key's bounds and charset.
    flag("replica-id-newline", ("run", *BACKEND, "--replica-id", "r1\nINFO forged"), "replica_id"),
    flag("replica-id-100-kb", ("run", *BACKEND, "--replica-id", "r" * 100_000), "replica_id"),
    flag("replica-id-empty", ("run", *BACKEND, "--replica-id", ""), "replica_id"),
    flag("replica-id-space", ("run", *BACKEND, "--replica-id", "my host"), "replica_id"),
    flag("cluster-empty", ("status", "--cluster", ""), "cluster"),
    flag("cluster-unicode", ("status", "--cluster", "prød"), "cluster"),
    flag("cluster-slash", ("status", "--cluster", "../etc"), "cluster"),
    flag("cluster-long", ("status", "--cluster", "c" * 129), "cluster"),
    flag("jobs-path", ("run", *BACKEND, "--jobs", "../evil"), "jobs"),
    flag("jobs-empty", ("run", *BACKEND, "--jobs", ""), "jobs"),
    flag("jobs-dash", ("jobs", *BACKEND, "--jobs", "my-jobs"), "jobs"),
    flag("config-missing", ("status", "--config", "{tmp}/nope.yaml"), "file not found"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_flag(case: Case, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """One line, exit 2, no usage dump, no traceback, no secret."""
    check(case, tmp_path, request)
    assert not (tmp_path / "b.db").exists(), "the command touched the backend before failing"
