"""Baton: distributed cron for Python — every replica schedules, one replica fires each tick.

Public API::

    from scheduler import singleton_job, JobContext, LeadershipLost
"""

from scheduler.errors import (
    BackendAuthError,
    BackendError,
    BackendPermanentError,
    BackendReadOnlyError,
    BackendSchemaError,
    BackendUnavailable,
    BackendUnprotectedError,
    BatonError,
    ConfigError,
    JobDefinitionError,
    JobsModuleError,
    LeadershipLost,
    LeaseLost,
    UserError,
)
from scheduler.fencing import RedisFence, SqlFence, StaleFencingToken
from scheduler.jobs.context import JobContext
from scheduler.jobs.spec import JobSpec, singleton_job
from scheduler.leadership.hooks import (
    LeadershipAcquiredEvent,
    LeadershipLostEvent,
    on_leadership_acquired,
    on_leadership_lost,
)

__version__ = "0.1.0"

__all__ = [
    "BackendAuthError",
    "BackendError",
    "BackendPermanentError",
    "BackendReadOnlyError",
    "BackendSchemaError",
    "BackendUnavailable",
    "BackendUnprotectedError",
    "BatonError",
    "ConfigError",
    "JobContext",
    "JobDefinitionError",
    "JobSpec",
    "JobsModuleError",
    "LeadershipAcquiredEvent",
    "LeadershipLost",
    "LeadershipLostEvent",
    "LeaseLost",
    "RedisFence",
    "SqlFence",
    "StaleFencingToken",
    "UserError",
    "__version__",
    "on_leadership_acquired",
    "on_leadership_lost",
    "singleton_job",
]
