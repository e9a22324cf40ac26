"""@singleton_job: a frozen spec on an unchanged function; errors name the job."""

from __future__ import annotations

import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.errors import JobDefinitionError, JobsModuleError
from scheduler.jobs.spec import SPEC_ATTR, JobRegistry, load_jobs, parse_every, singleton_job


def test_decorator_returns_function_unchanged_with_frozen_spec() -> None:
    """The function is returned as is, callable directly, with its spec attached."""

    def reconcile(ctx: object) -> str:
        return "done"

    decorated = singleton_job(every="30s", name="t.reconcile_a")(reconcile)
    assert decorated is reconcile and reconcile(None) == "done"
    spec = getattr(reconcile, SPEC_ATTR)
    assert spec.name == "t.reconcile_a" and spec.schedule == "every 30s"
    assert spec.misfire_grace == 60 and spec.catch_up == "latest"
    with pytest.raises(AttributeError):
        spec.name = "other"  # type: ignore[misc]


def test_default_name_is_module_and_qualname() -> None:
    """Without name= the job is called module.qualname."""

    @singleton_job(every=5)
    def nightly(ctx: object) -> None: ...

    assert (
        getattr(nightly, SPEC_ATTR).name
        == f"{__name__}.test_default_name_is_module_and_qualname.<locals>.nightly"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "0 0 31 2 *"}, "can never fire"),
        ({"cron": "61 * * * *"}, "invalid cron expression"),
        ({"cron": "* * * *"}, "must have 5 fields"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"every": "soon"}, "cannot read 'soon'"),
        ({"every": "0s"}, "must be from 100ms to 366d"),
        ({"every": "1s", "catch_up": "sometimes"}, "catch_up must be one of"),
        ({"every": "1s", "misfire_grace": 0}, "misfire_grace must be from 1 to 604800"),
        ({}, "exactly one of cron= or every="),
        ({"cron": "* * * * *", "every": "1s"}, "exactly one of cron= or every="),
        ({"every": "1s", "timezone": "UTC"}, "timezone= applies to cron= only"),
    ],
)
def test_invalid_definitions_name_the_job(kwargs: dict[str, object], message: str) -> None:
    """Each bad definition raises JobDefinitionError naming the job and the problem."""
    with pytest.raises(JobDefinitionError, match=message) as info:
        singleton_job(name="billing.bad", **kwargs)(lambda ctx: None)  # type: ignore[arg-type]
    assert info.value.job == "billing.bad" and "'billing.bad'" in str(info.value)


def test_duplicate_name_and_double_decoration_are_refused() -> None:
    """Two functions under one name, or one function decorated twice, are errors."""

    def first(ctx: object) -> None: ...

    def second(ctx: object) -> None: ...

    singleton_job(every="1s", name="t.dup")(first)
    with pytest.raises(JobDefinitionError, match="duplicate job name"):
        singleton_job(every="1s", name="t.dup")(second)
    with pytest.raises(JobDefinitionError, match="applied twice"):
        singleton_job(every="1s", name="t.dup2")(first)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("1h30m", timedelta(minutes=90)),
        ("500ms", timedelta(milliseconds=500)),
        (2, timedelta(seconds=2)),
        (timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_parse_every(value: object, expected: timedelta) -> None:
    """Durations read as strings, numbers or timedeltas."""
    assert parse_every(value) == expected  # type: ignore[arg-type]


def test_next_fire_is_utc() -> None:
    """next_fire returns an aware UTC instant."""

    @singleton_job(cron="0 3 * * *", timezone="Europe/Berlin", name="t.berlin")
    def report(ctx: object) -> None: ...

    fire = getattr(report, SPEC_ATTR).next_fire(datetime(2026, 7, 1, tzinfo=UTC))
    assert fire == datetime(2026, 7, 1, 1, 0, tzinfo=UTC)


def test_load_jobs_imports_a_package_and_its_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naming a package loads every module in it; a missing module is a clear error."""
    pkg = tmp_path / "myjobs_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "billing.py").write_text(
        textwrap.dedent("""
        from scheduler import singleton_job
        @singleton_job(every="1m", name="pkg.billing")
        def billing(ctx): ...
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = JobRegistry()
    monkeypatch.setattr("scheduler.jobs.spec.REGISTRY", registry)
    names = [spec.name for spec in load_jobs(["myjobs_pkg"], registry)]
    assert names == ["pkg.billing"]
    with pytest.raises(JobsModuleError, match="'no_such_jobs_module': not found"):
        load_jobs(["no_such_jobs_module"], registry)
    (tmp_path / "broken_jobs.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(JobsModuleError, match="import failed"):
        load_jobs(["broken_jobs"], registry)
    sys.modules.pop("myjobs_pkg", None)
    sys.modules.pop("myjobs_pkg.billing", None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"every": "1s", "misfire_grace": float("inf")}, "misfire_grace must be from 1"),
        ({"every": "1s", "misfire_grace": float("nan")}, "misfire_grace must be from 1"),
        ({"every": "1s", "misfire_grace": 10**400}, "misfire_grace must be from 1"),
        ({"every": "1s", "misfire_grace": True}, "misfire_grace must be a number"),
        ({"every": float("nan")}, "finite"),
        ({"every": float("inf")}, "finite"),
        ({"every": 10**12}, "from 100ms to 366d"),
        ({"every": "99999999999d"}, "from 100ms to 366d"),
        ({"every": timedelta.max}, "from 100ms to 366d"),
        ({"every": "10ms"}, "from 100ms to 366d"),
        ({"every": True}, "expected a duration"),
        ({"cron": "* * * *\n*"}, "one line"),
        ({"cron": "0 3 * * *", "timezone": "../../etc/passwd"}, "unknown time zone"),
        ({"cron": "0 3 * * *", "timezone": 5}, "IANA zone name"),
        ({"every": "1s", "catch_up": None}, "catch_up must be one of"),
        ({"every": "1s", "isolation": ["process"]}, "isolation must be one of"),
    ],
)
def test_numbers_and_strings_are_bounded(kwargs: dict[str, object], message: str) -> None:
    """No NaN, infinity, bool or overflowing value reaches a spec; errors name the job."""
    with pytest.raises(JobDefinitionError, match=message) as info:
        singleton_job(name="billing.bounded", **kwargs)(lambda ctx: None)  # type: ignore[arg-type]
    assert info.value.job == "billing.bounded"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("a b", "must be 1 to 200"),
        ("a\nb", "must be 1 to 200"),
        ("a/b", "must be 1 to 200"),
        ("j" * 201, "must be 1 to 200"),
        (5, "must be a string"),
    ],
)
def test_job_names_have_a_charset_and_length(name: object, message: str) -> None:
    """name="" is refused, not replaced by the default; whitespace, / and long names too."""
    with pytest.raises(JobDefinitionError, match=message) as info:
        singleton_job(every="1s", name=name)(lambda ctx: None)  # type: ignore[arg-type]
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_process_isolation_needs_an_importable_function() -> None:
    """A lambda or a nested function cannot run in a child: refused at definition time."""

    def nested(ctx: object) -> None: ...

    for func in (nested, lambda ctx: None):
        with pytest.raises(JobDefinitionError, match="isolation='process'"):
            singleton_job(every="1s", name="t.proc", isolation="process")(func)


@pytest.mark.parametrize(
    "body",
    [
        "import sys\nsys.exit(3)\n",
        "raise KeyboardInterrupt\n",
        "raise GeneratorExit\n",
        "class Boom(BaseException): ...\nraise Boom('x')\n",
    ],
)
def test_jobs_module_ending_the_process_is_a_module_error(
    body: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sys.exit() or a BaseException at import is a JobsModuleError naming the module."""
    (tmp_path / "exiting_jobs.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(JobsModuleError, match="'exiting_jobs': import raised"):
            load_jobs(["exiting_jobs"], JobRegistry())
    finally:
        sys.modules.pop("exiting_jobs", None)


def test_process_job_whose_name_was_rebound_is_refused_at_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process job the child could not find by module and qualname stops start-up."""
    (tmp_path / "rebound_jobs.py").write_text(
        "from scheduler import singleton_job\n"
        "@singleton_job(every='1s', name='t.rebound', isolation='process')\n"
        "def job(ctx): ...\n"
        "job = None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = JobRegistry()
    monkeypatch.setattr("scheduler.jobs.spec.REGISTRY", registry)
    try:
        with pytest.raises(JobDefinitionError, match=r"'t\.rebound'.*does not lead to it"):
            load_jobs(["rebound_jobs"], registry)
    finally:
        sys.modules.pop("rebound_jobs", None)
