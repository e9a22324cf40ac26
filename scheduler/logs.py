"""structlog set-up: JSON lines in containers, a console renderer on a TTY.

Every line carries ``replica``; leadership changes are single named events
(``leadership_acquired``, ``leadership_lost``, ``lease_released``) and job lines carry
``job``, ``scheduled_time`` and ``token``.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["json", "console", "auto"]


def configure(
    replica_id: str, log_format: LogFormat = "auto", stream: TextIO | None = None
) -> structlog.stdlib.BoundLogger:
    """Configure structlog process-wide and return a logger bound to ``replica_id``."""
    out = stream if stream is not None else sys.stderr
    use_json = log_format == "json" or (log_format == "auto" and not out.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries (APScheduler, kazoo) log through stdlib logging: keep only
    # warnings, on the same stream, so they do not drown Baton's own events.
    logging.basicConfig(stream=out, level=logging.WARNING, force=True)
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    return get_logger(replica=replica_id)


def get_logger(**bound: object) -> structlog.stdlib.BoundLogger:
    """A structlog logger with ``bound`` key/values on every line."""
    logger: structlog.stdlib.BoundLogger = structlog.get_logger("baton").bind(**bound)
    return logger
