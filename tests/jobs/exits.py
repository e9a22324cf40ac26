"""Thread jobs that end their thread in every way a job can (tests/scenarios/test_job_exits.py),
each every second, next to one ordinary job."""

from __future__ import annotations

import sys

from scheduler import JobContext, singleton_job


class Custom(BaseException):
    """A BaseException that is neither Exception nor one of the builtin exits."""


@singleton_job(every="1s", name="exit.sys_exit")
def plain_exit(ctx: JobContext) -> None:
    sys.exit()


@singleton_job(every="1s", name="exit.sys_exit_code")
def exit_code(ctx: JobContext) -> None:
    sys.exit(3)


@singleton_job(every="1s", name="exit.keyboard_interrupt")
def keyboard(ctx: JobContext) -> None:
    raise KeyboardInterrupt


@singleton_job(every="1s", name="exit.generator_exit")
def generator_exit(ctx: JobContext) -> None:
    raise GeneratorExit


@singleton_job(every="1s", name="exit.custom")
def custom(ctx: JobContext) -> None:
    raise Custom("secret=hunter2")


@singleton_job(every="1s", name="exit.ok")
def ok(ctx: JobContext) -> None:
    """Runs normally beside the others."""
