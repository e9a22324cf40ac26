"""What the commands take: the shared options and the parameter types that check values."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import click

from scheduler.errors import excerpt
from scheduler.jobs.spec import job_name_problem

F = TypeVar("F", bound=Callable[..., Any])

#: How much of a job name an operator's error line echoes.
NAME_EXCERPT = 60


def config_options(func: F) -> F:
    """The options every command shares: where the config is and what to override."""
    func = click.option(
        "--cluster", default=None, help="Election name (config key cluster; default 'default')."
    )(func)
    func = click.option(
        "--backend",
        default=None,
        metavar="URL",
        help="Backend URL (sqlite:///path, redis://host:port/db, rediss://, zookeeper://, "
        "postgresql://).",
    )(func)
    func = click.option(
        "--config",
        "config_path",
        default=None,
        type=click.Path(dir_okay=False),
        help="YAML config file (also BATON_CONFIG).",
    )(func)
    return func


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(func)


class JobName(click.ParamType[str, Any]):
    """A job name as ``@singleton_job`` accepts it (:data:`~scheduler.jobs.spec.JOB_NAME_RULE`)."""

    name = "job"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        problem = job_name_problem(value)
        if problem is not None:
            problem = problem.replace("name must", "a job name must", 1)
            self.fail(f"{problem}, got {excerpt(value)}", param, ctx)
        return str(value)


class Seconds(click.FloatRange):
    """A number of seconds in ``[0, maximum]``; unlike FloatRange alone, never nan."""

    name = "seconds"

    def __init__(self, maximum: float) -> None:
        super().__init__(min=0, max=maximum)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        # nan compares false with both bounds, so the range check lets it through.
        if math.isnan(number):
            self.fail(f"{excerpt(value, NAME_EXCERPT)} is not a number of seconds", param, ctx)
        return number
