"""@singleton_job: a frozen spec on an unchanged function; errors name the job."""

from __future__ import annotations

import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from scheduler.errors import JobDefinitionError, JobsModuleError
from scheduler.jobs import SPEC_ATTR, JobRegistry, load_jobs, parse_every, singleton_job


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
        ({"every": "0s"}, "must be positive"),
        ({"every": "1s", "catch_up": "sometimes"}, "catch_up must be one of"),
        ({"every": "1s", "misfire_grace": 0}, "misfire_grace must be > 0"),
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
    monkeypatch.setattr("scheduler.jobs.REGISTRY", registry)
    names = [spec.name for spec in load_jobs(["myjobs_pkg"], registry)]
    assert names == ["pkg.billing"]
    with pytest.raises(JobsModuleError, match="'no_such_jobs_module': not found"):
        load_jobs(["no_such_jobs_module"], registry)
    (tmp_path / "broken_jobs.py").write_text("import no_such_dependency_xyz\n")
    with pytest.raises(JobsModuleError, match="import failed"):
        load_jobs(["broken_jobs"], registry)
    sys.modules.pop("myjobs_pkg", None)
    sys.modules.pop("myjobs_pkg.billing", None)
