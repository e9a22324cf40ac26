"""Baton: distributed cron for Python — every replica schedules, one replica fires each tick.

Public API::

    from scheduler import singleton_job, JobContext, LeadershipLost
"""

from scheduler.context import JobContext
from scheduler.errors import (
    BackendAuthError,
    BackendError,
    BackendUnavailable,
    BatonError,
    ConfigError,
    JobDefinitionError,
    JobsModuleError,
    LeadershipLost,
    LeaseLost,
    UserError,
)
from scheduler.jobs import JobSpec, singleton_job

__version__ = "0.1.0"

__all__ = [
    "BackendAuthError",
    "BackendError",
    "BackendUnavailable",
    "BatonError",
    "ConfigError",
    "JobContext",
    "JobDefinitionError",
    "JobSpec",
    "JobsModuleError",
    "LeadershipLost",
    "LeaseLost",
    "UserError",
    "__version__",
    "singleton_job",
]
