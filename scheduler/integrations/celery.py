"""Baton as Celery's beat: every beat replica runs, the Baton leader sends each tick once.

Run ``celery -A proj beat -S scheduler.integrations.celery:BatonScheduler`` on as many hosts
as you like. :class:`BatonScheduler` reads the app's ``beat_schedule``, turns each entry
into a Baton job (a :class:`~scheduler.jobs.spec.JobSpec`) and runs an embedded Baton
replica in the beat process. Beat's own loop sends nothing and keeps no state file: an
entry's task is sent by its Baton job, which runs only on the replica holding the lease,
once per scheduled instant (claimed in the backend under the fenced lease), with the
catch-up policy of ``baton_catch_up``.

Every task Baton sends carries three message headers (:data:`HEADER_TOKEN`,
:data:`HEADER_SCHEDULED`, :data:`HEADER_KEY`) that the task reads with
:func:`fencing_from_request`; a ``@singleton_job`` sends the same with :func:`send_fenced`.

Configuration (Baton's own, not the broker's): a YAML file named by ``baton_config`` or
``BATON_CONFIG``, then ``BATON_<KEY>`` variables, each overriding ``app.conf.baton_<key>``
for the top-level keys (``baton_backend``, ``baton_cluster``, ``baton_replica_id``,
``baton_lease_ttl``, ...). The cluster defaults to ``celery-beat``, not ``default``, so
that beat never joins the election of a ``baton run`` deployment on the same backend.
``baton_catch_up`` (default ``latest``) and ``baton_misfire_grace`` (60 s) are the
entries' defaults; an entry overrides them with ``options={"baton_catch_up": "all"}``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import beat
from celery.schedules import crontab, schedule, solar

from scheduler.errors import BatonError, JobDefinitionError, excerpt
from scheduler.jobs.context import JobContext
from scheduler.jobs.spec import JobSpec, build_spec, job_name_problem, load_jobs
from scheduler.ops.config import KEYS, NESTED, Settings, load_settings
from scheduler.ops.logs import LEVELS

#: Message header: the fencing token of the lease the tick was claimed under (an int).
HEADER_TOKEN = "baton_fencing_token"
#: Message header: the tick's scheduled instant, ISO 8601 in UTC.
HEADER_SCHEDULED = "baton_scheduled_time"
#: Message header: ``<job>:<instant>`` (``:<key>`` appended by ``send_fenced(key=...)``),
#: stable across redeliveries of one send: the worker's deduplication key.
HEADER_KEY = "baton_idempotency_key"
#: Message header: the replica that sent the task (for diagnostics only).
HEADER_REPLICA = "baton_replica"

#: The cluster a beat replica joins unless ``baton_cluster`` / ``BATON_CLUSTER`` says.
DEFAULT_CLUSTER = "celery-beat"
#: Seconds between two passes of beat's own loop: it only watches the embedded replica.
TICK_INTERVAL = 1.0
#: Seconds :meth:`BatonScheduler.close` waits beyond ``shutdown_grace`` for the replica.
CLOSE_MARGIN = 10.0
#: Entry options read by Baton (and not passed to ``apply_async``).
OPTION_CATCH_UP = "baton_catch_up"
OPTION_MISFIRE_GRACE = "baton_misfire_grace"
#: Task ids are ``uuid5(TASK_ID_NAMESPACE, idempotency key)``: one id per tick.
TASK_ID_NAMESPACE = uuid.UUID("5b1c6f0e-9a57-4c84-9d1e-2f4f0d3b7a61")
#: Bounds of the headers as read back by a worker (they crossed a broker: untrusted).
MAX_KEY_LENGTH = 512
MAX_TOKEN = 2**63 - 1

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.:-]+")


class FencingHeaderError(BatonError, ValueError):
    """A task's Baton headers are present but malformed (missing one, wrong type, too long)."""


@dataclass(frozen=True, slots=True)
class FencedSend:
    """What a task learns from the Baton headers of its message.

    Attributes:
        token: the fencing token of the sender's lease; a sink refuses lower ones.
        scheduled_time: the tick's instant (aware, UTC).
        idempotency_key: the same for every delivery of one send: record it with the work
            and refuse a second delivery.
        replica: the sending replica, or ``None``.
    """

    token: int
    scheduled_time: datetime
    idempotency_key: str
    replica: str | None = None


def idempotency_key(job: str, scheduled_time: datetime, key: str | None = None) -> str:
    """``<job>:<instant in ISO 8601, UTC>``, with ``:<key>`` appended when given."""
    base = f"{job}:{scheduled_time.astimezone(UTC).isoformat()}"
    return base if key is None else f"{base}:{key}"


def fencing_headers(ctx: JobContext, key: str | None = None) -> dict[str, Any]:
    """The Baton message headers of a task sent for the run ``ctx``."""
    return {
        HEADER_TOKEN: ctx.fencing_token,
        HEADER_SCHEDULED: ctx.scheduled_time.astimezone(UTC).isoformat(),
        HEADER_KEY: idempotency_key(ctx.job, ctx.scheduled_time, key),
        HEADER_REPLICA: ctx.replica_id,
    }


def send_fenced(
    app: Any,
    ctx: JobContext,
    task_name: str,
    args: Sequence[Any] = (),
    kwargs: Mapping[str, Any] | None = None,
    *,
    key: str | None = None,
    **options: Any,
) -> Any:
    """Send a Celery task from a Baton job, carrying the run's fencing headers.

    Checks the lease locally (``ctx.check()``, no network call) right before publishing, so
    a replica that lost leadership, or was paused past its lease, sends nothing. The task id
    is derived from the idempotency key unless ``options`` give one, so every send of one
    tick has one id.

    Args:
        app: the Celery app.
        ctx: the running job's context.
        task_name: the task's registered name.
        args: positional arguments of the task.
        kwargs: keyword arguments of the task.
        key: distinguishes several tasks sent by one run (appended to the idempotency key).
        **options: passed to ``apply_async`` / ``send_task`` (``queue``, ``routing_key``,
            ``priority``, ``expires``, ``headers``, ...).

    Returns:
        The ``AsyncResult`` of the send.

    Raises:
        LeadershipLost: this replica may no longer act as leader; nothing was sent.
    """
    headers = dict(options.pop("headers", None) or {})
    headers.update(fencing_headers(ctx, key))
    options.setdefault("task_id", str(uuid.uuid5(TASK_ID_NAMESPACE, headers[HEADER_KEY])))
    ctx.check()
    task = app.tasks.get(task_name)
    if task is not None:  # registered here: its own routing and options apply, as in beat
        return task.apply_async(tuple(args), dict(kwargs or {}), headers=headers, **options)
    return app.send_task(task_name, tuple(args), dict(kwargs or {}), headers=headers, **options)


def fencing_from_request(request: Any) -> FencedSend | None:
    """The Baton headers of a running task (``self.request`` in a bound task).

    Returns:
        ``None`` when the message carries none of them (not sent by Baton).

    Raises:
        FencingHeaderError: some are present but one is missing or malformed.
    """
    found: dict[str, Any] = {}
    custom = getattr(request, "headers", None)
    for name in (HEADER_TOKEN, HEADER_SCHEDULED, HEADER_KEY, HEADER_REPLICA):
        value = custom.get(name) if isinstance(custom, Mapping) else None
        if value is None:
            value = getattr(request, name, None)
        if value is not None:
            found[name] = value
    if not found:
        return None
    missing = [name for name in (HEADER_TOKEN, HEADER_SCHEDULED, HEADER_KEY) if name not in found]
    if missing:
        raise FencingHeaderError(f"Baton headers incomplete: {', '.join(missing)} missing")
    token = found[HEADER_TOKEN]
    if isinstance(token, str) and token.isascii() and token.isdigit() and len(token) <= 19:
        token = int(token)
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token <= MAX_TOKEN:
        raise FencingHeaderError(
            f"{HEADER_TOKEN} must be a non-negative integer, got {excerpt(token, 40)}"
        )
    when = found[HEADER_SCHEDULED]
    try:
        if not isinstance(when, str) or len(when) > 64:
            raise ValueError
        instant = datetime.fromisoformat(when)
        if instant.tzinfo is None:
            raise ValueError
    except ValueError:
        raise FencingHeaderError(
            f"{HEADER_SCHEDULED} must be an ISO 8601 instant with an offset, "
            f"got {excerpt(when, 80)}"
        ) from None
    key = found[HEADER_KEY]
    if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise FencingHeaderError(
            f"{HEADER_KEY} must be 1 to {MAX_KEY_LENGTH} printable characters, "
            f"got {excerpt(key, 80)}"
        )
    replica = found.get(HEADER_REPLICA)
    return FencedSend(
        token=token,
        scheduled_time=instant.astimezone(UTC),
        idempotency_key=key,
        replica=replica if isinstance(replica, str) else None,
    )


# -- beat_schedule entries as Baton jobs ------------------------------------------------------


def job_name(entry_name: str) -> str:
    """The Baton job name of a ``beat_schedule`` entry: the entry's name when it is a valid job
    name, else its characters outside the charset replaced by ``-`` and a short hash of the
    original appended (``"add every 10"`` -> ``add-every-10-<8 hex>``), so it stays unique."""
    if job_name_problem(entry_name) is None:
        return entry_name
    cleaned = _NOT_IN_NAME.sub("-", str(entry_name)).strip("-")[:180] or "entry"
    if cleaned[0] in ".:-":
        cleaned = "_" + cleaned
    digest = hashlib.sha256(str(entry_name).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{cleaned}-{digest}"


def _cron_field(values: set[int], low: int, high: int) -> str:
    """A set of ints as a cron field: ``*`` for every value, else ranges and single values."""
    if set(range(low, high + 1)) <= values:
        return "*"
    parts, ordered = [], sorted(values)
    start = prev = ordered[0]
    for value in [*ordered[1:], None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return ",".join(parts)


def cron_expression(entry: crontab) -> str:
    """A Celery ``crontab`` as a 5-field cron expression (``min hour dom month dow``).

    Raises:
        ValueError: both ``day_of_month`` and ``day_of_week`` are restricted: Celery fires
            on days matching both, cron(8) (and Baton) on days matching either.
    """
    dom = _cron_field(set(entry.day_of_month), 1, 31)
    dow = _cron_field(set(entry.day_of_week), 0, 6)
    if dom != "*" and dow != "*":
        raise ValueError(
            "crontab restricts both day_of_month and day_of_week: Celery fires on days matching "
            "both, cron (and Baton) on days matching either; restrict one of them"
        )
    return " ".join(
        (
            _cron_field(set(entry.minute), 0, 59),
            _cron_field(set(entry.hour), 0, 23),
            dom,
            _cron_field(set(entry.month_of_year), 1, 12),
            dow,
        )
    )


def _evaluated(value: Any) -> Any:
    return value() if isinstance(value, beat.BeatLazyFunc) else value


def _sender(
    app: Any, task: str, args: Sequence[Any], kwargs: Mapping[str, Any], options: dict[str, Any]
) -> Callable[[JobContext], object]:
    """The job function of one entry: send its task with the run's fencing headers."""

    def send(ctx: JobContext) -> object:
        call_args = [_evaluated(value) for value in args]
        call_kwargs = {name: _evaluated(value) for name, value in kwargs.items()}
        sent = dict(options)
        # As celery beat marks its sends, so tools that look for it still find it.
        sent["headers"] = {**(options.get("headers") or {}), "celery_beat_task": True}
        result = send_fenced(app, ctx, task, call_args, call_kwargs, **sent)
        return getattr(result, "id", None)

    send.__qualname__ = send.__name__ = f"send_{task}"
    return send


def entry_spec(
    entry: Any, app: Any, catch_up: str = "latest", misfire_grace: float = 60.0
) -> JobSpec:
    """Build the Baton job of one ``beat_schedule`` entry (a ``celery.beat.ScheduleEntry``).

    ``crontab`` becomes ``cron=`` in its time zone (the app's ``timezone``), an interval
    (seconds or a ``timedelta``) becomes ``every=``; ``solar`` and other schedules are
    refused. The entry's ``options`` go to ``apply_async``, but ``baton_catch_up`` and
    ``baton_misfire_grace``, which override ``catch_up`` and ``misfire_grace``.

    Raises:
        JobDefinitionError: naming the job, for a schedule Baton cannot keep.
    """
    name = job_name(entry.name)
    options = dict(entry.options or {})
    catch_up = options.pop(OPTION_CATCH_UP, catch_up)
    misfire_grace = options.pop(OPTION_MISFIRE_GRACE, misfire_grace)
    every = cron = tz = None
    when = entry.schedule
    if isinstance(when, solar):
        raise JobDefinitionError(
            name, "solar schedules are not supported by BatonScheduler; use crontab"
        )
    if isinstance(when, crontab):
        try:
            cron = cron_expression(when)
        except ValueError as exc:
            raise JobDefinitionError(name, str(exc)) from None
        tz = when.tz
    elif isinstance(when, schedule):
        every = when.run_every
    else:
        raise JobDefinitionError(
            name,
            f"schedule {excerpt(when, 80)}: BatonScheduler understands crontab, a number of "
            "seconds and a timedelta",
        )
    func = _sender(app, entry.task, tuple(entry.args or ()), dict(entry.kwargs or {}), options)
    return build_spec(
        func,
        cron=cron,
        every=every,
        timezone=tz,
        name=name,
        misfire_grace=misfire_grace,
        catch_up=catch_up,
    )


def baton_settings(app: Any, environ: Mapping[str, str] | None = None) -> Settings:
    """Baton's settings for a beat process.

    Sources, each overriding the one before: the defaults (cluster ``celery-beat``), the
    file named by ``app.conf.baton_config`` or ``BATON_CONFIG``, ``app.conf.baton_<key>``,
    then ``BATON_<KEY>`` variables (the deployment overrides the code). Sections
    (``http``, ``zookeeper``) come from the file or the variables only.

    Raises:
        ConfigError: naming the key and where the bad value came from.
    """
    env = os.environ if environ is None else environ
    overrides = {
        key: app.conf.get(f"baton_{key}")
        for key in KEYS
        if key not in NESTED
        and app.conf.get(f"baton_{key}") is not None
        and f"BATON_{key.upper()}" not in env
    }
    path = app.conf.get("baton_config") or None
    settings = load_settings(path, overrides, env, overrides_from="the Celery app's conf")
    if "cluster" not in settings.model_fields_set:
        settings = settings.model_copy(update={"cluster": DEFAULT_CLUSTER})
    return settings


def _configure_logs(settings: Settings) -> None:
    """Baton's events through the standard library's logging, which Celery set up."""
    import structlog

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer()
            if settings.log_format == "json"
            else structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[settings.log_level]),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )


class BatonScheduler(beat.Scheduler):  # type: ignore[misc]
    """A ``celery beat`` scheduler whose entries are sent by Baton's leader, once per tick.

    ``celery -A proj beat -S scheduler.integrations.celery:BatonScheduler``, on every beat
    replica. The schedule is read once, at start-up; beat's state file is not used. Beat's
    loop only watches the embedded replica (every :data:`TICK_INTERVAL` s) and stops beat
    when it failed (a permanent backend refusal, a replica id in use). On shutdown the
    replica stops firing, waits ``shutdown_grace`` for running sends and releases the lease.
    """

    def __init__(self, app: Any, *args: Any, **kwargs: Any) -> None:
        self.settings = baton_settings(app)
        self.specs: list[JobSpec] = []
        self._replica: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._closed = False
        super().__init__(app, *args, **kwargs)

    def setup_schedule(self) -> None:
        """Read ``beat_schedule`` (and Celery's default entries) into Baton jobs.

        Raises:
            JobDefinitionError: an entry Baton cannot keep, naming it; beat does not start.
        """
        super().setup_schedule()
        conf = self.app.conf
        catch_up = conf.get("baton_catch_up") or "latest"
        grace = conf.get("baton_misfire_grace")
        grace = 60.0 if grace is None else grace
        specs = [
            entry_spec(entry, self.app, catch_up, grace)
            for _, entry in sorted(self.schedule.items())
        ]
        if "jobs" in self.settings.model_fields_set:
            specs.extend(load_jobs(self.settings.jobs))
        names: dict[str, str] = {}
        for spec in specs:
            if spec.name in names:
                raise JobDefinitionError(spec.name, "two jobs (beat entries or jobs) share a name")
            names[spec.name] = spec.name
        self.specs = specs

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Start the replica on the first pass; later, stop beat if the replica failed."""
        if self._thread is None:
            self._start_replica()
        if self._failure is not None:
            raise self._failure
        return float(min(self.max_interval, TICK_INTERVAL))

    def _start_replica(self) -> None:
        # Imported here: a worker importing this module for fencing_from_request needs none
        # of the election, firing or HTTP machinery.
        from scheduler.ops.replica import Replica

        _configure_logs(self.settings)
        replica = Replica(self.settings, self.specs)
        replica.preflight()  # refused for good: raises, and beat stops with the cause
        self._replica = replica

        def run() -> None:
            try:
                replica.run(self._stop)
            except BaseException as exc:
                self._failure = exc

        self._thread = threading.Thread(target=run, name="baton-replica", daemon=True)
        self._thread.start()

    def sync(self) -> None:
        """Nothing to store: the run history is in Baton's backend."""

    def close(self) -> None:
        """Stop the replica gracefully (release the lease), then Celery's publishing resources."""
        if not self._closed:
            self._closed = True
            self._stop.set()
            if self._thread is not None:
                self._thread.join(self.settings.shutdown_grace + CLOSE_MARGIN)
        super().close()

    @property
    def info(self) -> str:
        s = self.settings
        return (
            f"    . baton -> cluster {s.cluster} on {s.backend}, replica {s.replica_id}, "
            f"lease_ttl {s.lease_ttl:g} s"
        )
