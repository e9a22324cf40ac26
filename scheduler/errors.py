"""Baton's exceptions: one root, user errors that name the resource, and lease outcomes.

Three outcomes are kept apart throughout the code base: contention is an ordinary answer
(``None``), lost ownership raises :class:`LeaseLost`, success returns a value.
"""

from __future__ import annotations


class BatonError(Exception):
    """Root of every exception Baton raises on purpose."""


class UserError(BatonError):
    """A mistake in what the user gave us (config, job definitions, arguments).

    The CLI prints ``str(error)`` on one line and exits with status 2, without a traceback.
    """


class ConfigError(UserError, ValueError):
    """A config value is missing, unknown, of the wrong type or inconsistent with another.

    Args:
        key: the config key (dotted for nested keys) the problem is about.
        message: what is wrong with it.
    """

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"config key {key!r}: {message}")


class JobDefinitionError(UserError, ValueError):
    """A ``@singleton_job`` definition is invalid (bad cron, duplicate name, ...)."""

    def __init__(self, job: str, message: str) -> None:
        self.job = job
        super().__init__(f"job {job!r}: {message}")


class JobsModuleError(UserError, ImportError):
    """A jobs module named in the config or on the command line cannot be imported."""

    def __init__(self, module: str, message: str) -> None:
        self.module = module
        super().__init__(f"jobs module {module!r}: {message}")


class BackendError(BatonError):
    """A problem talking to the coordination backend; ``backend`` is its redacted URL."""

    def __init__(self, backend: str, message: str) -> None:
        self.backend = backend
        super().__init__(f"backend {backend}: {message}")


class BackendUnavailable(BackendError, ConnectionError):
    """The backend did not answer in time or refused the connection.

    Transient by nature: the elector retries with capped backoff and never leads meanwhile.
    """


class BackendAuthError(BackendError, UserError, PermissionError):
    """The backend rejected our credentials; retrying will not help."""


class LeaseLost(BatonError):
    """The lease is no longer held by the caller (expired, taken over or deleted).

    Args:
        name: the lease (election) name.
        reason: a short machine-friendly reason, e.g. ``"expired"`` or ``"not-holder"``.
    """

    def __init__(self, name: str, reason: str = "not-holder") -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"lease {name!r} lost: {reason}")


class ClaimLost(BatonError, LookupError):
    """A claim attempt's record is not there to act on: gone, another attempt's, or no
    longer ``claimed`` (already started, finished or given back).

    Args:
        job: the job name.
        scheduled_time: the fire instant, ISO-8601.
        reason: a short machine-friendly reason (``"gone"``, ``"other-attempt"``,
            ``"not-claimed"``).
    """

    def __init__(self, job: str, scheduled_time: str, reason: str) -> None:
        self.job = job
        self.scheduled_time = scheduled_time
        self.reason = reason
        super().__init__(f"job {job!r} fire {scheduled_time}: claim lost ({reason})")


class FireNotDue(BatonError):
    """The backend's clock says a fire is not due yet: this replica's clock runs ahead.

    Args:
        name: the lease (election) name.
        wait: seconds until the backend's clock reaches the fire (minus its allowance).
    """

    def __init__(self, name: str, wait: float) -> None:
        self.name = name
        self.wait = wait
        super().__init__(f"lease {name!r}: fire not due for {wait:.3f} s by the backend's clock")


class LeadershipLost(BatonError):
    """Raised by :meth:`JobContext.check` once this replica may no longer act as leader."""

    def __init__(self, job: str, reason: str) -> None:
        self.job = job
        self.reason = reason
        super().__init__(f"job {job!r}: leadership lost ({reason})")
