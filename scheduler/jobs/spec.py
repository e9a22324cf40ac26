"""``@singleton_job``: attaches a frozen :class:`JobSpec` to a function; the job registry.

The decorator does not wrap the function, it only records how to schedule it; the function
stays callable as written (handy in unit tests of the job itself). Definitions are checked
when the decorator runs, i.e. when the jobs module is imported at start-up, so a bad cron
expression or a duplicate name stops the replica before it joins the election.

Every argument is checked for its type and bounds (no NaN, no infinity, no bool for a
number, nothing that overflows a datetime): see :func:`build_spec` for the bounds.
"""

from __future__ import annotations

import importlib
import inspect
import math
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

from scheduler.errors import JobDefinitionError, JobsModuleError, excerpt, printable
from scheduler.jobs.schedules import EpochInterval, WallCron, describe_interval

if TYPE_CHECKING:
    from scheduler.jobs.context import JobContext

CatchUp = Literal["latest", "none", "all"]
CATCH_UP_POLICIES: tuple[CatchUp, ...] = ("latest", "none", "all")
Isolation = Literal["thread", "process"]
ISOLATIONS: tuple[Isolation, ...] = ("thread", "process")

#: Attribute under which the spec hangs on the decorated function.
SPEC_ATTR = "__baton_job__"

JobFunc = Callable[["JobContext"], object]
F = TypeVar("F", bound=Callable[..., Any])

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,12})?)(ms|s|m|h|d)")

#: Job names: 1 to 200 ASCII letters, digits and ``_ . : -``, starting with a letter, digit
#: or ``_``; ``<`` and ``>`` are allowed too, for the default name of a nested function
#: (``module.outer.<locals>.job``). No whitespace, no ``/`` (a ZooKeeper path separator).
JOB_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:<>-]{0,199}")
JOB_NAME_RULE = (
    "1 to 200 ASCII letters, digits or '_.:-<>' characters, starting with a letter, digit or '_'"
)
#: ``every=`` bounds: at least 100 ms (a claim per fire costs a backend round trip), at most
#: 366 days (use cron= for rarer jobs), a whole number of milliseconds.
EVERY_MIN = timedelta(milliseconds=100)
EVERY_MAX = timedelta(days=366)
#: ``misfire_grace=`` bounds in seconds: at least 1 s, at most 7 days (the catch-up look-back).
MISFIRE_GRACE_MIN = 1.0
MISFIRE_GRACE_MAX = 7 * 86400.0
#: Time zone names as the IANA database spells them (``America/Argentina/Buenos_Aires``).
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*")
_MAX_CRON = 200


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or ``None`` for a bool, a non-number, NaN, an infinity or
    an integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def job_name_problem(name: object) -> str | None:
    """What is wrong with ``name`` as a job name, or ``None`` if it is a valid one."""
    if not isinstance(name, str):
        return f"name must be a string, got {type(name).__name__}"
    if not name:
        return "name must not be empty"
    if not JOB_NAME_PATTERN.fullmatch(name):
        return f"name must be {JOB_NAME_RULE}"
    return None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """How and when a job runs. Built by :func:`singleton_job`; immutable.

    Attributes:
        name: unique job name (default ``module.qualname``); with a fire instant it
            identifies a tick in the run history.
        func: the job function, called with a :class:`~scheduler.jobs.context.JobContext`;
            an ``async def`` function runs on an event loop (Baton's own loop thread, or the
            host application's loop when embedded) and is cancelled on leadership loss.
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

    @property
    def is_async(self) -> bool:
        """Whether the job is an ``async def`` function (run on an event loop)."""
        return inspect.iscoroutinefunction(self.func)

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire instant at or after ``after``, in UTC."""
        fire = self.trigger.get_next_fire_time(None, after)
        return fire.astimezone(UTC) if fire is not None else None


def parse_every(value: str | int | float | timedelta) -> timedelta:
    """``30s``, ``5m``, ``1h30m``, ``500ms``, a number of seconds or a timedelta -> timedelta.

    Raises:
        ValueError: malformed, not finite, not a whole number of milliseconds, or outside
            :data:`EVERY_MIN` to :data:`EVERY_MAX` (100 ms to 366 days).
    """
    bounds = f"from {describe_interval(EVERY_MIN)} to {describe_interval(EVERY_MAX)}"
    if isinstance(value, timedelta):
        interval = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = _finite(value)
        if seconds is None:
            raise ValueError(f"interval must be a finite number of seconds, got {excerpt(value)}")
        if not 0 < seconds <= EVERY_MAX.total_seconds():
            raise ValueError(f"interval must be {bounds}, got {excerpt(value)} s")
        interval = timedelta(seconds=seconds)
    elif isinstance(value, str) and value.strip() and len(value) <= 64:
        text = value.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos != len(text):
            raise ValueError(
                f"cannot read {excerpt(value)} as a duration (e.g. '30s', '5m', '1h30m')"
            )
        if not 0 < seconds <= EVERY_MAX.total_seconds():
            raise ValueError(f"interval must be {bounds}, got {excerpt(value)}")
        interval = timedelta(seconds=seconds)
    elif isinstance(value, str):
        raise ValueError(f"expected a duration such as '30s', got {excerpt(value)}")
    else:
        raise ValueError(f"expected a duration such as '30s', got {type(value).__name__}")
    if not EVERY_MIN <= interval <= EVERY_MAX:
        raise ValueError(f"interval must be {bounds}, got {interval.total_seconds():g} s")
    if interval % timedelta(milliseconds=1):
        raise ValueError("interval must be a whole number of milliseconds")
    return interval


def _zone(name: str | tzinfo | None) -> tzinfo:
    if name is None:
        return UTC
    if isinstance(name, tzinfo):
        return name
    if not isinstance(name, str):
        raise ValueError(f"timezone must be an IANA zone name, got {type(name).__name__}")
    if len(name) > 64 or not _ZONE_NAME.fullmatch(name):
        raise ValueError(f"unknown time zone {excerpt(name)}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown time zone {excerpt(name)}") from exc


def _importable(func: Callable[..., Any]) -> bool:
    """Whether a child process can find ``func`` by module and qualified name."""
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__":
        return False
    return all(part.isidentifier() for part in (*module.split("."), *qualname.split(".")))


def _resolves(func: Callable[..., Any]) -> bool:
    """Whether ``func`` is what its module and qualified name lead to, once imported."""
    found: Any = sys.modules.get(func.__module__)
    for part in func.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is func


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

    Bounds: ``name`` matches :data:`JOB_NAME_PATTERN` (1 to 200 characters, see there);
    ``every`` from 100 ms to 366 days in whole milliseconds; ``misfire_grace`` from 1 s to 7
    days; ``cron`` one line of at most 200 printable ASCII characters; ``timezone`` an IANA
    name. Numbers must be finite and not bools. ``isolation="process"`` needs a function a
    child process can import by module and qualified name (not a lambda, not nested).

    Raises:
        JobDefinitionError: naming the job, for any invalid argument.
    """
    if not callable(func):
        raise JobDefinitionError(excerpt(name or func), "a job must be a function")
    if name is None:
        job_name = f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"
        problem = job_name_problem(job_name)
        if problem is not None:
            raise JobDefinitionError(
                job_name, f"the default name is not a valid job name; pass name= ({problem})"
            )
    else:
        job_name = name if isinstance(name, str) else excerpt(name)
        problem = job_name_problem(name)
        if problem is not None:
            raise JobDefinitionError(job_name, problem)
    if (cron is None) == (every is None):
        raise JobDefinitionError(job_name, "give exactly one of cron= or every=")
    if not isinstance(catch_up, str) or catch_up not in CATCH_UP_POLICIES:
        raise JobDefinitionError(
            job_name,
            f"catch_up must be one of {', '.join(CATCH_UP_POLICIES)}, got {excerpt(catch_up)}",
        )
    if isinstance(misfire_grace, bool) or not isinstance(misfire_grace, int | float):
        raise JobDefinitionError(
            job_name, f"misfire_grace must be a number of seconds, got {excerpt(misfire_grace)}"
        )
    grace = _finite(misfire_grace)
    if grace is None or not MISFIRE_GRACE_MIN <= grace <= MISFIRE_GRACE_MAX:
        raise JobDefinitionError(
            job_name,
            f"misfire_grace must be from {MISFIRE_GRACE_MIN:g} to {MISFIRE_GRACE_MAX:g} seconds "
            f"(7 days), got {excerpt(misfire_grace)}",
        )
    if on_lost is not None and not callable(on_lost):
        raise JobDefinitionError(job_name, f"on_lost must be callable, got {excerpt(on_lost)}")
    if on_lost is not None and inspect.iscoroutinefunction(on_lost):
        raise JobDefinitionError(
            job_name,
            "on_lost must be a plain function (it runs on the hook thread); an async job "
            "sees the loss as CancelledError, or awaits ctx.wait_lost()",
        )
    if not isinstance(isolation, str) or isolation not in ISOLATIONS:
        raise JobDefinitionError(
            job_name,
            f"isolation must be one of {', '.join(ISOLATIONS)}, got {excerpt(isolation)}",
        )
    if isolation == "process" and inspect.iscoroutinefunction(func):
        raise JobDefinitionError(
            job_name,
            "isolation='process' runs plain functions only; an async def job runs on an "
            "event loop and is cancelled on leadership loss (use isolation='thread')",
        )
    if isolation == "process" and not _importable(func):
        raise JobDefinitionError(
            job_name,
            "isolation='process' needs a module-level function a child process can import "
            f"by name, not {excerpt(getattr(func, '__qualname__', func))}",
        )
    trigger: BaseTrigger
    if cron is not None:
        if not isinstance(cron, str):
            raise JobDefinitionError(job_name, f"cron must be a string, got {excerpt(cron)}")
        shown = excerpt(cron)
        if len(cron) > _MAX_CRON or not (cron.isascii() and cron.replace("\t", " ").isprintable()):
            raise JobDefinitionError(
                job_name,
                f"cron expression {shown} must be one line of at most {_MAX_CRON} ASCII characters",
            )
        if len(cron.split()) != 5:
            raise JobDefinitionError(
                job_name, f"cron expression {shown} must have 5 fields (min hour dom mon dow)"
            )
        try:
            tz = _zone(timezone)
        except ValueError as exc:
            raise JobDefinitionError(job_name, str(exc)) from exc
        try:
            trigger = WallCron(cron, tz)
        except (ValueError, TypeError, OverflowError) as exc:
            why = printable(str(exc))[:120]
            raise JobDefinitionError(job_name, f"invalid cron expression {shown}: {why}") from exc
        if trigger.get_next_fire_time(None, datetime.now(UTC)) is None:
            raise JobDefinitionError(job_name, f"cron expression {shown} can never fire")
        schedule = str(trigger)
    else:
        if timezone is not None:
            raise JobDefinitionError(job_name, "timezone= applies to cron= only")
        assert every is not None
        try:
            interval = parse_every(every)
        except ValueError as exc:
            raise JobDefinitionError(job_name, f"invalid every=: {exc}") from exc
        trigger = EpochInterval(interval)
        schedule = f"every {describe_interval(interval)}"
    return JobSpec(
        name=job_name,
        func=func,
        schedule=schedule,
        trigger=trigger,
        misfire_grace=grace,
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
        JobsModuleError: a module cannot be found or fails to import (not a definition error),
            also when importing it calls ``sys.exit()`` or raises another ``BaseException``.
        JobDefinitionError: a job in it is invalid, or a ``process`` job's function cannot
            be found again by its module and qualified name.
    """
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    for module in modules:
        current = module
        try:
            imported = importlib.import_module(module)
            # A package (such as the project's ``jobs/``) brings all its modules.
            for info in pkgutil.walk_packages(getattr(imported, "__path__", []), module + "."):
                current = info.name
                importlib.import_module(info.name)
        except JobDefinitionError:
            raise
        except ModuleNotFoundError as exc:
            if exc.name is not None and current.startswith(exc.name):
                raise JobsModuleError(
                    current, "not found (is it on PYTHONPATH, or spelled differently?)"
                ) from exc
            raise JobsModuleError(current, f"import failed: {_why(exc)}") from exc
        except Exception as exc:
            raise JobsModuleError(current, f"import failed: {_why(exc)}") from exc
        except BaseException as exc:  # sys.exit(), KeyboardInterrupt, ... at import time
            raise JobsModuleError(
                current, f"import raised {_why(exc)} (a jobs module must only define jobs)"
            ) from exc
    specs = registry.specs()
    for spec in specs:
        if spec.isolation == "process" and not _resolves(spec.func):
            raise JobDefinitionError(
                spec.name,
                "isolation='process' needs a function a child process finds as "
                f"{excerpt(spec.func.__module__ + '.' + spec.func.__qualname__)}, "
                "but that name does not lead to it",
            )
    return specs


def _why(exc: BaseException) -> str:
    """``Type: message`` of an exception from a user's module, one short printable line."""
    try:
        text = printable(str(exc))
    except Exception:  # a user's exception whose __str__ fails
        text = ""
    if len(text) > 160:
        text = text[:160] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
