"""Baton: distributed cron for Python — every replica schedules, one replica fires each tick.

Public API::

    from scheduler import singleton_job, JobContext, LeadershipLost
    from scheduler import BatonReplica      # embed a replica in an app (scheduler.ops.embed)
"""

from typing import TYPE_CHECKING, Any

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
    ReplicaAlreadyRunning,
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

if TYPE_CHECKING:
    from scheduler.ops.embed import BatonReplica

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    """``BatonReplica`` is imported on first use: a jobs module importing ``scheduler``
    must not pull in the election, firing and HTTP machinery (nor import it circularly)."""
    if name == "BatonReplica":
        from scheduler.ops.embed import BatonReplica

        return BatonReplica
    raise AttributeError(f"module 'scheduler' has no attribute {name!r}")


__all__ = [
    "BackendAuthError",
    "BackendError",
    "BackendPermanentError",
    "BackendReadOnlyError",
    "BackendSchemaError",
    "BackendUnavailable",
    "BackendUnprotectedError",
    "BatonError",
    "BatonReplica",
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
    "ReplicaAlreadyRunning",
    "SqlFence",
    "StaleFencingToken",
    "UserError",
    "__version__",
    "on_leadership_acquired",
    "on_leadership_lost",
    "singleton_job",
]
