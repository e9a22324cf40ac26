"""``@singleton_job``: attaches a frozen :class:`JobSpec` to a function; the job registry.

The decorator does not wrap the function, it only records how to schedule it; the function
stays callable as written (handy in unit tests of the job itself). Definitions are checked
when the decorator runs, i.e. when the jobs module is imported at start-up, so a bad cron
expression or a duplicate name stops the replica before it joins the election.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger

from scheduler.errors import JobDefinitionError, JobsModuleError
from scheduler.schedules import EpochInterval, WallCron, describe_interval

if TYPE_CHECKING:
    from scheduler.context import JobContext

CatchUp = Literal["latest", "none", "all"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("latest", "none", "all")
Isolation = Literal["thread", "process"]
ISOLATIONS: tuple[Isolation, ...] = ("thread", "process")

#: Attribute under which the spec hangs on the decorated function.
SPEC_ATTR = "__baton_job__"

JobFunc = Callable[["JobContext"], object]
F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """How and when a job runs. Built by :func:`singleton_job`; immutable.

    Attributes:
        name: unique job name (default ``module.qualname``); with a fire instant it
            identifies a tick in the run history.
        func: the job function, called with a :class:`~scheduler.context.JobContext`.
        schedule: human description, e.g. ``cron '*/5 * * * *' (UTC)`` or ``every 30s``.
        trigger: the APScheduler trigger computing fire instants (identical on all replicas).
        misfire_grace: seconds; a fire that cannot start within this long after its instant
            is skipped, and a new leader looks back this far for unclaimed fires (default
            60). Longer catches more after a failover but runs staler work.
        catch_up: what a new leader does with unclaimed fires within ``misfire_grace``:
            ``latest`` runs the most recent one once (coalesced), ``all`` runs each in
            order, ``none`` runs none.
        on_lost: called with the run's context when leadership is lost while it runs (on
            the hook thread; must not block for long).
        isolation: ``thread`` (default; cheap, but a job ignoring ``ctx.lost`` keeps
            running) or ``process`` (a child process, SIGTERM then SIGKILL on leadership
            loss, and it ends itself at the lease deadline; costs a process start per run).
    """

    name: str
    func: JobFunc
    schedule: str
    trigger: BaseTrigger
    misfire_grace: float
    catch_up: CatchUp
    on_lost: Callable[[JobContext], object] | None = None
    isolation: Isolation = "thread"

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire instant at or after ``after``, in UTC."""
        fire = self.trigger.get_next_fire_time(None, after)
        return fire.astimezone(UTC) if fire is not None else None


def parse_every(value: str | int | float | timedelta) -> timedelta:
    """``30s``, ``5m``, ``1h30m``, ``500ms``, a number of seconds or a timedelta -> timedelta.

    Raises:
        ValueError: malformed, zero or negative.
    """
    if isinstance(value, timedelta):
        interval = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        interval = timedelta(seconds=value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text):
            raise ValueError(f"cannot read {value!r} as a duration (e.g. '30s', '5m', '1h30m')")
        interval = timedelta(seconds=seconds)
    else:
        raise ValueError(f"expected a duration such as '30s', got {value!r}")
    if interval <= timedelta(0):
        raise ValueError(f"interval must be positive, got {value!r}")
    return interval


def _zone(name: str | tzinfo | None) -> tzinfo:
    if name is None:
        return UTC
    if isinstance(name, tzinfo):
        return name
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def build_spec(
    func: JobFunc,
    *,
    cron: str | None = None,
    every: str | int | float | timedelta | None = None,
    timezone: str | tzinfo | None = None,
    name: str | None = None,
    misfire_grace: float = 60.0,
    catch_up: str = "latest",
    on_lost: Callable[[JobContext], object] | None = None,
    isolation: str = "thread",
) -> JobSpec:
    """Validate a job definition and build its spec (what the decorator does).

    Raises:
        JobDefinitionError: naming the job, for any invalid argument.
    """
    job_name = name or f"{func.__module__}.{func.__qualname__}"
    if not job_name or any(ch.isspace() for ch in job_name):
        raise JobDefinitionError(job_name, "name must be non-empty and contain no whitespace")
    if (cron is None) == (every is None):
        raise JobDefinitionError(job_name, "give exactly one of cron= or every=")
    if catch_up not in CATCH_UP_POLICIES:
        raise JobDefinitionError(
            job_name, f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {catch_up!r}"
        )
    if isinstance(misfire_grace, bool) or not isinstance(misfire_grace, int | float):
        raise JobDefinitionError(job_name, f"misfire_grace must be seconds, got {misfire_grace!r}")
    if misfire_grace <= 0:
        raise JobDefinitionError(job_name, f"misfire_grace must be > 0 s, got {misfire_grace}")
    if on_lost is not None and not callable(on_lost):
        raise JobDefinitionError(job_name, f"on_lost must be callable, got {on_lost!r}")
    if isolation not in ISOLATIONS:
        raise JobDefinitionError(
            job_name, f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}"
        )
    if isolation == "process" and "<locals>" in func.__qualname__:
        raise JobDefinitionError(
            job_name, "isolation='process' needs a module-level function (a child imports it)"
        )
    trigger: BaseTrigger
    if cron is not None:
        fields = cron.split() if isinstance(cron, str) else []
        if len(fields) != 5:
            raise JobDefinitionError(
                job_name, f"cron expression {cron!r} must have 5 fields (min hour dom mon dow)"
            )
        try:
            tz = _zone(timezone)
            trigger = WallCron(cron, tz)
        except ValueError as exc:
            raise JobDefinitionError(job_name, f"invalid cron expression {cron!r}: {exc}") from exc
        if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
            raise JobDefinitionError(job_name, f"cron expression {cron!r} can never fire")
        schedule = str(trigger)
    else:
        if timezone is not None:
            raise JobDefinitionError(job_name, "timezone= applies to cron= only")
        assert every is not None
        try:
            interval = parse_every(every)
        except ValueError as exc:
            raise JobDefinitionError(job_name, f"invalid every=: {exc}") from exc
        if interval % timedelta(milliseconds=1):
            raise JobDefinitionError(job_name, "every= must be a whole number of milliseconds")
        trigger = EpochInterval(interval)
        schedule = f"every {describe_interval(interval)}"
    return JobSpec(
        name=job_name,
        func=func,
        schedule=schedule,
        trigger=trigger,
        misfire_grace=float(misfire_grace),
        catch_up=catch_up,  # checked against CATCH_UP_POLICIES above
        on_lost=on_lost,
        isolation=isolation,  # checked against ISOLATIONS above
    )


class JobRegistry:
    """Job specs by name; refuses two different functions under one name."""

    def __init__(self) -> None:
        self._specs: dict[str, JobSpec] = {}
        self._lock = threading.Lock()

    def add(self, spec: JobSpec) -> None:
        """Register ``spec``.

        Raises:
            JobDefinitionError: another function is already registered under that name.
        """
        with self._lock:
            known = self._specs.get(spec.name)
            if known is not None and _origin(known.func) != _origin(spec.func):
                raise JobDefinitionError(
                    spec.name,
                    f"duplicate job name: already defined by {_origin(known.func)}, "
                    f"again by {_origin(spec.func)}; pass name= to tell them apart",
                )
            # Same origin: a module imported twice (e.g. reloaded); the newer one wins.
            self._specs[spec.name] = spec

    def specs(self) -> list[JobSpec]:
        """All registered specs, sorted by name."""
        with self._lock:
            return sorted(self._specs.values(), key=lambda s: s.name)


def _origin(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


#: The process-wide registry the decorator fills.
REGISTRY = JobRegistry()


def singleton_job(
    *,
    cron: str | None = None,
    every: str | int | float | timedelta | None = None,
    timezone: str | tzinfo | None = None,
    name: str | None = None,
    misfire_grace: float = 60.0,
    catch_up: str = "latest",
    on_lost: Callable[[JobContext], object] | None = None,
    isolation: str = "thread",
) -> Callable[[F], F]:
    """Declare a function as a job that fires on exactly one replica per tick.

    Args:
        cron: 5-field cron expression (``min hour dom mon dow``), evaluated in ``timezone``.
        every: interval (``"30s"``, ``"5m"``, seconds, or a timedelta); ticks are aligned to
            the Unix epoch in UTC, so all replicas agree on them whenever they started.
        timezone: IANA zone name for ``cron`` (default UTC).
        name: unique job name (default ``module.qualname``).
        misfire_grace: seconds a fire may start late; also the catch-up look-back (default 60).
        catch_up: ``latest`` (default), ``all`` or ``none``: see :class:`JobSpec`.
        on_lost: ``on_lost(ctx)`` is called when leadership is lost during a run.
        isolation: ``thread`` (default) or ``process`` (hard abort): see :class:`JobSpec`.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        JobDefinitionError: naming the job, if the definition is invalid, duplicated, or the
            function is decorated twice.
    """

    def decorate(func: F) -> F:
        if hasattr(func, SPEC_ATTR):
            raise JobDefinitionError(
                getattr(func, SPEC_ATTR).name, "@singleton_job applied twice to one function"
            )
        spec = build_spec(
            func,
            cron=cron,
            every=every,
            timezone=timezone,
            name=name,
            misfire_grace=misfire_grace,
            catch_up=catch_up,
            on_lost=on_lost,
            isolation=isolation,
        )
        REGISTRY.add(spec)
        setattr(func, SPEC_ATTR, spec)
        return func

    return decorate


def load_jobs(modules: Iterable[str], registry: JobRegistry = REGISTRY) -> list[JobSpec]:
    """Import the jobs modules (running their decorators) and return every registered spec.

    The current directory is put on ``sys.path`` first, as ``python -m`` would, so a
    project's own ``jobs/`` package is found by the ``baton`` console script.

    Raises:
        JobsModuleError: a module cannot be found or fails to import (not a definition error).
        JobDefinitionError: a job in it is invalid.
    """
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    for module in modules:
        try:
            imported = importlib.import_module(module)
            # A package (such as the project's ``jobs/``) brings all its modules.
            for info in pkgutil.walk_packages(getattr(imported, "__path__", []), module + "."):
                importlib.import_module(info.name)
        except JobDefinitionError:
            raise
        except ModuleNotFoundError as exc:
            if exc.name is not None and module.startswith(exc.name):
                raise JobsModuleError(
                    module, "not found (is it on PYTHONPATH, or spelled differently?)"
                ) from exc
            raise JobsModuleError(module, f"import failed: {exc}") from exc
        except Exception as exc:
            raise JobsModuleError(module, f"import failed: {type(exc).__name__}: {exc}") from exc
    return registry.specs()
