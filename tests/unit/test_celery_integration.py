"""The Celery integration without processes: entries to jobs, the send, the headers, settings."""

from __future__ import annotations

import importlib.util
import sqlite3
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.app.task import Context
from celery.schedules import crontab, solar

from scheduler.clock import SYSTEM_CLOCK
from scheduler.errors import ConfigError, JobDefinitionError, LeadershipLost
from scheduler.integrations.celery import (
    DEFAULT_CLUSTER,
    HEADER_KEY,
    HEADER_SCHEDULED,
    HEADER_TOKEN,
    TASK_ID_NAMESPACE,
    BatonScheduler,
    FencingHeaderError,
    baton_settings,
    cron_expression,
    entry_spec,
    fencing_from_request,
    job_name,
)
from scheduler.jobs.context import JobContext
from scheduler.jobs.spec import job_name_problem

ROOT = Path(__file__).resolve().parents[2]
AT = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)


@pytest.fixture(autouse=True)
def no_baton_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)


def make_app(**conf: Any) -> Celery:
    app = Celery("unit", broker="memory://", set_as_current=False)
    app.conf.update(conf)
    return app


class Entry:
    """The attributes of a ``celery.beat.ScheduleEntry`` that Baton reads."""

    def __init__(self, name: str, schedule: Any, options: dict[str, Any] | None = None) -> None:
        self.name, self.task, self.schedule = name, "proj.work", schedule
        self.args, self.kwargs, self.options = (1,), {"x": 2}, options or {}


class Recorder:
    """Stands in for the Celery app where a send is only recorded."""

    def __init__(self) -> None:
        self.tasks: dict[str, Any] = {}
        self.sent: list[tuple[str, tuple[Any, ...], dict[str, Any], dict[str, Any]]] = []

    def send_task(self, name: str, args: Any, kwargs: Any, **options: Any) -> Any:
        self.sent.append((name, args, kwargs, options))
        return None


def context(lost: bool = False, token: int = 7) -> JobContext:
    event = threading.Event()
    if lost:
        event.set()
    return JobContext(
        job="nightly",
        scheduled_time=AT,
        fencing_token=token,
        replica_id="beat-1",
        lost=event,
        _deadline=lambda: SYSTEM_CLOCK.monotonic() + 10,
        _clock=SYSTEM_CLOCK,
    )


def a_solar() -> solar:
    """A solar schedule; its constructor needs ``ephem`` (celery[solar]), not installed."""
    made = solar.__new__(solar)
    made.nowfun, made._app = None, None
    return made


def test_crontab_becomes_the_same_cron_expression() -> None:
    """Celery crontab fields map to cron fields, Sunday 0 in both."""
    assert cron_expression(crontab(minute=30, hour=2)) == "30 2 * * *"
    assert cron_expression(crontab(minute="*/15")) == "0,15,30,45 * * * *"
    assert cron_expression(crontab(minute=0, hour="9-17", day_of_week="mon-fri")) == (
        "0 9-17 * * 1-5"
    )
    assert cron_expression(crontab(minute=0, hour=0, day_of_week="sun")) == "0 0 * * 0"
    assert cron_expression(crontab(minute=0, hour=0, day_of_month=1, month_of_year="1,7")) == (
        "0 0 1 1,7 *"
    )


def test_crontab_restricting_both_day_fields_is_refused() -> None:
    """Celery ANDs day_of_month and day_of_week, cron ORs them: refused, not reinterpreted."""
    app = make_app()
    entry = Entry("both", crontab(minute=0, hour=0, day_of_month=1, day_of_week="mon", app=app))
    with pytest.raises(JobDefinitionError, match="both day_of_month and day_of_week"):
        entry_spec(entry, app)


def test_crontab_is_read_in_the_apps_time_zone() -> None:
    """A crontab entry fires on the wall clock of app.conf.timezone."""
    app = make_app(timezone="Europe/Berlin")
    spec = entry_spec(Entry("berlin", crontab(minute=30, hour=2, app=app)), app)
    assert spec.schedule == "cron '30 2 * * *' (Europe/Berlin)"
    fire = spec.next_fire(datetime(2026, 7, 1, tzinfo=UTC))
    assert fire == datetime(2026, 7, 1, 0, 30, tzinfo=UTC)  # 02:30 CEST


def test_intervals_become_every() -> None:
    """A number of seconds and a timedelta both become epoch-aligned intervals."""
    from celery.schedules import schedule

    app = make_app()
    spec = entry_spec(Entry("ten", schedule(10.0, app=app)), app)
    assert spec.schedule == "every 10s"
    assert spec.next_fire(AT) == datetime(2026, 3, 1, 12, 0, 10, tzinfo=UTC)
    spec = entry_spec(Entry("five", schedule(timedelta(minutes=5), app=app)), app)
    assert spec.schedule == "every 5m"
    with pytest.raises(JobDefinitionError, match="interval"):
        entry_spec(Entry("fast", schedule(0.05, app=app)), app)


def test_solar_and_unknown_schedules_are_refused() -> None:
    """solar (and any schedule that is not crontab or an interval) stops beat with the name."""
    app = make_app()
    with pytest.raises(JobDefinitionError, match=r"'dawn'.*solar schedules are not supported"):
        entry_spec(Entry("dawn", a_solar()), app)
    with pytest.raises(JobDefinitionError, match="understands crontab"):
        entry_spec(Entry("odd", object()), app)


def test_entry_names_outside_the_charset_get_a_stable_unique_name() -> None:
    """Names with spaces become valid job names, distinct from a lookalike valid name."""
    assert job_name("add-every-10") == "add-every-10"
    renamed = job_name("add every 10")
    assert job_name_problem(renamed) is None
    assert renamed.startswith("add-every-10-") and renamed != "add-every-10"
    assert job_name("add every 10") == renamed
    assert job_name_problem(job_name(" /é/ ")) is None


def test_baton_options_are_taken_out_of_the_send_options() -> None:
    """baton_catch_up / baton_misfire_grace set the job's policy and are not sent to Celery."""
    from celery.schedules import schedule

    app, recorder = make_app(), Recorder()
    entry = Entry(
        "sync",
        schedule(1.0, app=app),
        {"queue": "billing", "baton_catch_up": "all", "baton_misfire_grace": 30},
    )
    spec = entry_spec(entry, recorder, catch_up="none", misfire_grace=5)
    assert (spec.catch_up, spec.misfire_grace) == ("all", 30)
    spec.func(context())
    [(name, args, kwargs, options)] = recorder.sent
    assert (name, args, kwargs) == ("proj.work", (1,), {"x": 2})
    assert options["queue"] == "billing"
    assert not any(key.startswith("baton_") for key in options)
    assert options["headers"]["celery_beat_task"] is True
    assert options["headers"][HEADER_TOKEN] == 7
    assert options["headers"][HEADER_SCHEDULED] == AT.isoformat()
    assert options["headers"][HEADER_KEY] == f"nightly:{AT.isoformat()}"
    assert options["task_id"] == str(uuid.uuid5(TASK_ID_NAMESPACE, f"nightly:{AT.isoformat()}"))


def test_a_replica_that_lost_leadership_sends_nothing() -> None:
    """The lease is checked right before publishing: a deposed leader's job raises."""
    from celery.schedules import schedule

    app, recorder = make_app(), Recorder()
    spec = entry_spec(Entry("sync", schedule(1.0, app=app)), recorder)
    with pytest.raises(LeadershipLost):
        spec.func(context(lost=True))
    assert recorder.sent == []


def test_headers_read_back_from_a_task_request() -> None:
    """fencing_from_request reads the headers as a worker's request carries them."""
    headers = {
        HEADER_TOKEN: 42,
        HEADER_SCHEDULED: "2026-03-01T13:00:05+01:00",
        HEADER_KEY: "nightly:2026-03-01T12:00:05+00:00",
    }
    send = fencing_from_request(Context(headers=headers))
    assert send is not None
    assert (send.token, send.scheduled_time) == (42, AT)
    assert send.idempotency_key == headers[HEADER_KEY]
    assert fencing_from_request(Context(**headers)) == send  # as request attributes too
    assert fencing_from_request(Context(headers={"other": 1})) is None
    assert fencing_from_request(Context(headers={**headers, HEADER_TOKEN: "42"})) == send


@pytest.mark.parametrize(
    "change",
    [
        {HEADER_TOKEN: None},
        {HEADER_TOKEN: -1},
        {HEADER_TOKEN: True},
        {HEADER_TOKEN: "4x"},
        {HEADER_SCHEDULED: "2026-03-01T12:00:05"},  # no offset
        {HEADER_SCHEDULED: "yesterday"},
        {HEADER_KEY: ""},
        {HEADER_KEY: "k" * 600},
        {HEADER_KEY: "a\nb"},
    ],
)
def test_malformed_headers_are_refused(change: dict[str, Any]) -> None:
    """Headers crossed a broker: a missing or malformed one raises, never passes."""
    headers = {
        HEADER_TOKEN: 42,
        HEADER_SCHEDULED: AT.isoformat(),
        HEADER_KEY: "nightly:x",
        **change,
    }
    with pytest.raises(FencingHeaderError):
        fencing_from_request(Context(headers={k: v for k, v in headers.items() if v is not None}))


def test_settings_come_from_the_app_conf_and_the_environment() -> None:
    """app.conf.baton_* sets Baton's keys, BATON_* overrides them; the cluster is beat's own."""
    app = make_app(baton_backend="redis://127.0.0.1:6379/1", baton_lease_ttl=4)
    settings = baton_settings(app, environ={})
    assert settings.backend.reveal() == "redis://127.0.0.1:6379/1"
    assert (settings.lease_ttl, settings.cluster) == (4, DEFAULT_CLUSTER)
    settings = baton_settings(app, environ={"BATON_BACKEND": "redis://other:6379/2"})
    assert settings.backend.reveal() == "redis://other:6379/2"
    app.conf.baton_cluster = "mine"
    assert baton_settings(app, environ={}).cluster == "mine"
    app.conf.baton_lease_ttl = "soon"
    with pytest.raises(ConfigError, match=r"lease_ttl.*Celery app's conf"):
        baton_settings(app, environ={})


@pytest.fixture
def lazy_app() -> Celery:
    app = make_app(baton_backend="redis://127.0.0.1:1/0", baton_replica_id="unit")
    app.conf.beat_schedule = {
        "every second": {"task": "proj.work", "schedule": 1.0},
        "nightly": {"task": "proj.work", "schedule": crontab(minute=0, hour=3)},
    }
    return app


def test_scheduler_turns_the_beat_schedule_into_jobs(lazy_app: Celery) -> None:
    """Every beat_schedule entry becomes a job; nothing is started before beat's loop."""
    scheduler = BatonScheduler(lazy_app)
    try:
        names = {spec.name for spec in scheduler.specs}
        assert "nightly" in names and job_name("every second") in names
        assert scheduler._thread is None  # no replica until the first tick
        assert "cluster celery-beat" in scheduler.info
    finally:
        scheduler.close()


def test_scheduler_refuses_a_schedule_it_cannot_keep(lazy_app: Celery) -> None:
    """A bad entry stops beat at start-up, naming the entry."""
    lazy_app.conf.beat_schedule["dawn"] = {
        "task": "proj.work",
        "schedule": a_solar(),
    }
    with pytest.raises(JobDefinitionError, match="dawn"):
        BatonScheduler(lazy_app)


@pytest.fixture
def example() -> Iterator[Any]:
    path = ROOT / "config" / "celery" / "proj.py"
    spec = importlib.util.spec_from_file_location("celery_example_proj", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_example_guard_refuses_a_redelivery_and_a_stale_send(example: Any) -> None:
    """config/celery/proj.py: one tick applied once; a lower token refused after a higher."""
    conn = sqlite3.connect(":memory:")

    def request(token: int, key: str) -> Context:
        return Context(
            headers={HEADER_TOKEN: token, HEADER_SCHEDULED: AT.isoformat(), HEADER_KEY: key}
        )

    assert example.apply_once(conn, request(5, "a:1"), "w") is True
    assert example.apply_once(conn, request(5, "a:1"), "w") is False  # redelivered
    assert example.apply_once(conn, request(6, "a:2"), "w") is True  # a new leader
    assert example.apply_once(conn, request(5, "a:3"), "w") is False  # the deposed one, late
    assert conn.execute("SELECT count(*) FROM done").fetchone() == (2,)
